"""PyTorch re-implementation of MAR, DiffLoss, the diffusion sampler and the KL VAE decoder with the
official module structure, for cross-checking mar_ref.py (check_torch_mar.py) and for naming the
official state-dict layout (convert_mar.py --selftest).

Modules and attribute names follow LTH14/mar models/mar.py (with timm 0.9.12's Block),
models/diffloss.py and models/vae.py, so that state_dict() gives the official names and
load_state_dict(strict=True) accepts converted weights. The code is written independently and
batched like the original: CFG doubles the batch as [cond; uncond] and forward_with_cfg runs the
head on the duplicated conditional half, as the official code does; the sampler follows CSpD's
p_sample_loop_progressive_with_noise (noise from outside). Configs are the "mar" / "vae" sections
of a MAR config.json. Dtype follows the modules (call .double() for the float64 checks).
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from check_torch import Attn as AttnBlock
from check_torch import Resnet as ResnetBlock
from check_torch import Upsample


# ------------------------------------------------------------------------------- transformer

class Attention(nn.Module):
    """timm Attention: fused qkv with bias, bidirectional SDPA, proj."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """timm Mlp: fc1, exact GELU, fc2."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm 0.9.12 Block at inference (no layer scale, no drop path): pre-LN residual blocks."""

    def __init__(self, dim, num_heads, mlp_ratio, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# ------------------------------------------------------------------------------- DiffLoss head

class TimestepEmbedder(nn.Module):
    """Sinusoid (cos first, 256 frequencies) then Linear, SiLU, Linear."""

    def __init__(self, hidden, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def timestep_embedding(self, t):
        """[n, freq_dim] sinusoid, computed in the module's dtype."""
        half = self.freq_dim // 2
        dtype = self.mlp[0].weight.dtype
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=dtype) / half)
        args = t[:, None].to(dtype) * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t))


class ResBlock(nn.Module):
    """adaLN residual MLP block."""

    def __init__(self, ch):
        super().__init__()
        self.in_ln = nn.LayerNorm(ch, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(ch, ch), nn.SiLU(), nn.Linear(ch, ch))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(ch, 3 * ch))

    def forward(self, x, y):
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.in_ln(x) * (1 + scale) + shift)


class FinalLayer(nn.Module):
    """LN without affine, adaLN (shift, scale), linear to out channels."""

    def __init__(self, ch, out_ch):
        super().__init__()
        self.norm_final = nn.LayerNorm(ch, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(ch, out_ch)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(ch, 2 * ch))

    def forward(self, x, y):
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class SimpleMLPAdaLN(nn.Module):
    """The DiffLoss MLP: out = [eps, v] with 2C channels."""

    def __init__(self, in_ch, width, z_ch, depth):
        super().__init__()
        self.in_channels = in_ch
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(z_ch, width)
        self.input_proj = nn.Linear(in_ch, width)
        self.res_blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final_layer = FinalLayer(width, 2 * in_ch)

    def forward(self, x, t, c):
        x = self.input_proj(x)
        y = self.time_embed(t) + self.cond_embed(c)
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)

    def forward_with_cfg(self, x, t, c, cfg_scale):
        """Runs the first half twice ([cond; uncond] conditions), guides eps, keeps each half's variance."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half]), t, c)
        eps, rest = out[:, :self.in_channels], out[:, self.in_channels:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)


class DiffLoss(nn.Module):
    """Holds the head as .net (state-dict prefix diffloss.net.)."""

    def __init__(self, cfg):
        super().__init__()
        c = cfg["vae_embed_dim"] * cfg["patch_size"] ** 2
        self.net = SimpleMLPAdaLN(c, cfg["diffloss_w"], cfg["decoder_embed_dim"], cfg["diffloss_d"])


# ------------------------------------------------------------------------------- MAR

class MAR(nn.Module):
    """MAR encoder/decoder with the official parameter names."""

    def __init__(self, cfg):
        super().__init__()
        de, dd, eps = cfg["encoder_embed_dim"], cfg["decoder_embed_dim"], cfg["norm_eps"]
        self.buffer_size = cfg["buffer_size"]
        self.seq_len = (cfg["img_size"] // cfg["vae_stride"] // cfg["patch_size"]) ** 2
        c = cfg["vae_embed_dim"] * cfg["patch_size"] ** 2
        self.class_emb = nn.Embedding(cfg["class_num"], de)
        self.fake_latent = nn.Parameter(torch.zeros(1, de))
        self.z_proj = nn.Linear(c, de)
        self.z_proj_ln = nn.LayerNorm(de, eps=eps)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len + self.buffer_size, de))
        self.encoder_blocks = nn.ModuleList(
            Block(de, cfg["encoder_num_heads"], cfg["mlp_ratio"], eps) for _ in range(cfg["encoder_depth"]))
        self.encoder_norm = nn.LayerNorm(de, eps=eps)
        self.decoder_embed = nn.Linear(de, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len + self.buffer_size, dd))
        self.decoder_blocks = nn.ModuleList(
            Block(dd, cfg["decoder_num_heads"], cfg["mlp_ratio"], eps) for _ in range(cfg["decoder_depth"]))
        self.decoder_norm = nn.LayerNorm(dd, eps=eps)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len, dd))
        self.diffloss = DiffLoss(cfg)

    def _mask_with_buffer(self, mask):
        return torch.cat([torch.zeros(mask.shape[0], self.buffer_size, dtype=mask.dtype), mask], dim=1)

    def forward_mae_encoder(self, x, mask, class_embedding):
        x = self.z_proj(x)
        bsz, _, d = x.shape
        x = torch.cat([torch.zeros(bsz, self.buffer_size, d, dtype=x.dtype), x], dim=1)
        x[:, :self.buffer_size] = class_embedding.unsqueeze(1)
        x = self.z_proj_ln(x + self.encoder_pos_embed_learned)
        x = x[(1 - self._mask_with_buffer(mask)).nonzero(as_tuple=True)].reshape(bsz, -1, d)
        for block in self.encoder_blocks:
            x = block(x)
        return self.encoder_norm(x)

    def forward_mae_decoder(self, x, mask):
        x = self.decoder_embed(x)
        mwb = self._mask_with_buffer(mask)
        pad = self.mask_token.repeat(mwb.shape[0], mwb.shape[1], 1).to(x.dtype).clone()
        pad[(1 - mwb).nonzero(as_tuple=True)] = x.reshape(x.shape[0] * x.shape[1], x.shape[2])
        x = pad + self.decoder_pos_embed_learned
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)
        return x[:, self.buffer_size:] + self.diffusion_pos_embed_learned

    def enc_dec(self, tokens, mask, class_embedding):
        return self.forward_mae_decoder(self.forward_mae_encoder(tokens, mask, class_embedding), mask)

    def class_embed_cfg(self, labels, cfg):
        """[cond; fake_latent] rows when cfg != 1, as CSpD's class_embed_cfg."""
        emb = self.class_emb(labels)
        if cfg != 1.0:
            emb = torch.cat([emb, self.fake_latent.repeat(len(labels), 1)])
        return emb


# ------------------------------------------------------------------------------- diffusion

class Diffusion:
    """The respaced cosine-schedule DDPM of create_diffusion(str(steps), "cosine") with
    LEARNED_RANGE variances and eps prediction. The schedule is built in torch float64 by walking
    the base alphas_cumprod as SpacedDiffusion does; coefficients are gathered per step."""

    def __init__(self, num_sampling_steps=100, diffusion_steps=1000):
        i = torch.arange(diffusion_steps + 1, dtype=torch.float64) / diffusion_steps
        abar_fn = torch.cos((i + 0.008) / 1.008 * math.pi / 2) ** 2
        base_betas = torch.clamp(1 - abar_fn[1:] / abar_fn[:-1], max=0.999)
        base_abar = torch.cumprod(1 - base_betas, 0)
        stride = (diffusion_steps - 1) / (num_sampling_steps - 1)
        use = {round(j * stride) for j in range(num_sampling_steps)}
        last, betas, self.timestep_map = 1.0, [], []
        for t, a in enumerate(base_abar.tolist()):
            if t in use:
                betas.append(1 - a / last)
                last = a
                self.timestep_map.append(t)
        self.betas = torch.tensor(betas, dtype=torch.float64)
        abar = torch.cumprod(1 - self.betas, 0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.post_var = self.betas * (1 - prev) / (1 - abar)
        self.post_log_var = torch.log(torch.cat([self.post_var[1:2], self.post_var[1:]]))
        self.coef1 = self.betas * prev.sqrt() / (1 - abar)
        self.coef2 = (1 - prev) * (1 - self.betas).sqrt() / (1 - abar)
        self.recip = (1 / abar).sqrt()
        self.recipm1 = (1 / abar - 1).sqrt()
        self.num_timesteps = num_sampling_steps

    def p_mean_variance(self, model, x, k, **kw):
        """(mean, log_variance, pred_xstart) at respaced step k; the model sees timestep_map[k]."""
        out = model(x, torch.full((x.shape[0],), self.timestep_map[k], dtype=x.dtype), **kw)
        eps, v = torch.split(out, x.shape[1], dim=1)
        frac = (v + 1) / 2
        log_var = frac * math.log(self.betas[k]) + (1 - frac) * self.post_log_var[k].item()
        x0 = self.recip[k].item() * x - self.recipm1[k].item() * eps
        return self.coef1[k].item() * x0 + self.coef2[k].item() * x, log_var, x0

    def p_sample_loop_with_noise(self, model, noise, inter_noise, temperature=1.0, **kw):
        """Returns (sample, mean_0, std_0 * temperature, sum_{k>=1} log_var_k / 2) as CSpD's
        DistributionManager (inter_noise [K, n, C], step k uses inter_noise[k])."""
        x, log_sigma = noise, 0.0
        for k in reversed(range(self.num_timesteps)):
            mean, log_var, _ = self.p_mean_variance(model, x, k, **kw)
            std = torch.exp(0.5 * log_var) * temperature
            x = mean + (k != 0) * std * inter_noise[k]
            if k == 0:
                return x, mean, std, log_sigma
            log_sigma = log_sigma + 0.5 * log_var


def sample_with_inter_noise(head, diffusion, z, noise, inter_noise, temperature, cfg):
    """CSpD DiffLoss.sample_with_inter_noise: forward_with_cfg when cfg != 1, else forward."""
    if cfg != 1.0:
        return diffusion.p_sample_loop_with_noise(head.forward_with_cfg, noise, inter_noise, temperature,
                                                  c=z, cfg_scale=cfg)
    return diffusion.p_sample_loop_with_noise(head.forward, noise, inter_noise, temperature, c=z)


def generation_masks(mask2, orders, step, num_iter):
    """(mask_next, to_pred, mask_len) of one step, as CSpD's generate_next_mask and
    generate_mask_pred (mask2 is the possibly CFG-doubled current mask; mask_len is clamped)."""
    bsz, seq_len = orders.shape
    ratio = np.cos(math.pi / 2.0 * (step + 1) / num_iter)
    mask_len = torch.tensor([np.floor(seq_len * ratio)])
    mask_len = torch.maximum(torch.tensor([1.0]), torch.minimum(mask2.sum(-1, keepdim=True) - 1, mask_len)).long()
    mask_next = torch.zeros(bsz, seq_len, dtype=mask2.dtype).scatter(-1, orders[:, :mask_len[0].item()], 1.0)
    if step >= num_iter - 1:
        return mask_next, mask2[:bsz].bool(), mask_len[0].item()
    return mask_next, torch.logical_xor(mask2[:bsz].bool(), mask_next.bool()), mask_len[0].item()


def sample_tokens(model, diffusion, labels, orders, num_iter, cfg, cfg_schedule, temperature, noise, inter_noise):
    """CSpD MAR.sample_tokens with sample_tokens_step and shared inter_noise: batch-doubled CFG,
    cosine mask schedule with clamps, Muse linear or constant guidance. Returns tokens [B, L, C]."""
    bsz, seq_len = orders.shape
    tokens = torch.zeros(bsz, seq_len, noise.shape[-1], dtype=noise.dtype)
    mask = torch.ones(bsz, seq_len, dtype=noise.dtype)
    class_embedding = model.class_embed_cfg(labels, cfg)

    def expand(*a):
        return [torch.cat([t, t]) for t in a] if cfg != 1.0 else list(a)

    noise, inter_noise = expand(noise, inter_noise)
    for step in range(num_iter):
        tok2, mask2 = expand(tokens, mask)
        z = model.enc_dec(tok2, mask2, class_embedding)
        mask, to_pred, mask_len = generation_masks(mask2, orders, step, num_iter)
        idx = torch.cat(expand(to_pred)).nonzero(as_tuple=True)
        cfg_iter = 1 + (cfg - 1) * (seq_len - mask_len) / seq_len if cfg_schedule == "linear" else cfg
        sampled, _, _, _ = sample_with_inter_noise(model.diffloss.net, diffusion, z[idx], noise[idx],
                                                   inter_noise[idx].transpose(0, 1), temperature, cfg_iter)
        tokens[to_pred.nonzero(as_tuple=True)] = sampled[:len(sampled) // 2] if cfg != 1.0 else sampled
    return tokens


# ------------------------------------------------------------------------------- KL VAE decoder
# The LDM ResnetBlock, AttnBlock and Upsample are LlamaGen's VQ decoder blocks (same names and maths).

class Decoder(nn.Module):
    """LDM Decoder with attn_resolutions=() (attention in mid only)."""

    def __init__(self, cfg):
        super().__init__()
        ch, mult, g = cfg["ch"], cfg["ch_mult"], cfg["norm_groups"]
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg["embed_dim"], block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, g)
        self.mid.attn_1 = AttnBlock(block_in, g)
        self.mid.block_2 = ResnetBlock(block_in, block_in, g)
        self.up = nn.ModuleList()
        for i in reversed(range(len(mult))):
            up = nn.Module()
            up.block = nn.ModuleList()
            for _ in range(cfg["num_res_blocks"] + 1):
                up.block.append(ResnetBlock(block_in, ch * mult[i], g))
                block_in = ch * mult[i]
            if i != 0:
                up.upsample = Upsample(block_in)
            self.up.insert(0, up)
        self.norm_out = nn.GroupNorm(g, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, cfg["out_ch"], 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i in reversed(range(len(self.up))):
            for block in self.up[i].block:
                h = block(h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VAEDecoder(nn.Module):
    """The decoding half of AutoencoderKL: post_quant_conv then decoder."""

    def __init__(self, cfg):
        super().__init__()
        self.post_quant_conv = nn.Conv2d(cfg["embed_dim"], cfg["embed_dim"], 1)
        self.decoder = Decoder(cfg)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))
