"""Independent NumPy (float64) reference for MAR + DiffLoss + the KL-16 VAE decoder.

Written from shared/notes/continuous-sd-spec.md ("spec" below, section numbers in each docstring)
and checked against the official code (LTH14/mar models/mar.py, models/diffloss.py,
diffusion/*.py, models/vae.py; MarkXCloud/CSpD for the sampler that takes its noise from outside).
Everything is plain NumPy in float64 and deliberately unoptimised: it exists to produce golden
numbers for spire's Rust tests, not to be fast. One image at a time; the head works on a batch of
tokens [n, C].

Weights are dicts mapping the official state-dict names to NumPy arrays; configs are the "mar"
and "vae" sections of a MAR config.json (plain dicts, schema in tools/README.md).

Contents
  config:     grid_size, token_dim
  tokens:     patchify, unpatchify
  transformer: layer_norm, gelu, linear, vit_block, class_embedding, mae_encoder, mae_decoder,
              enc_dec
  schedule:   mask_by_order, next_mask_len, step_masks, tokens_per_step, cfg_at_step
  diffusion:  cosine_betas, space_timesteps, respaced_schedule, timestep_embedding,
              head_forward, head_forward_cfg, p_mean_variance, head_sample
  generation: sample_tokens
  VAE:        vae_decode, tokens_to_latent, pixels_to_rgb
"""

import math

import numpy as np

import llamagen_ref as common  # the LDM conv blocks and I/O helpers are shared with LlamaGen's VQ

HEAD = "diffloss.net."
FREQ_DIM = 256  # TimestepEmbedder frequency_embedding_size


# ---------------------------------------------------------------------------------------------
# Config and token layout (spec §1.1)
# ---------------------------------------------------------------------------------------------

def grid_size(cfg):
    """Token grid side: img_size // vae_stride // patch_size (16 for the released models; §1.1)."""
    return cfg["img_size"] // cfg["vae_stride"] // cfg["patch_size"]


def token_dim(cfg):
    """Channels of one token: vae_embed_dim * patch_size^2 (16 for the released models; §1.1)."""
    return cfg["vae_embed_dim"] * cfg["patch_size"] ** 2


def patchify(latent, p):
    """[C, H, W] latent -> [(H/p)(W/p), C p p] tokens (spec §1.1, einsum 'chpwq->hwcpq')."""
    c, hh, ww = latent.shape
    h, w = hh // p, ww // p
    x = latent.reshape(c, h, p, w, p).transpose(1, 3, 0, 2, 4)
    return x.reshape(h * w, c * p * p)


def unpatchify(tokens, c, h, w, p):
    """[h w, C p p] tokens -> [C, h p, w p] latent, the inverse of patchify (spec §1.1)."""
    x = tokens.reshape(h, w, c, p, p).transpose(2, 0, 3, 1, 4)
    return x.reshape(c, h * p, w * p)


# ---------------------------------------------------------------------------------------------
# Transformer (spec §1.2, §1.3)
# ---------------------------------------------------------------------------------------------

def layer_norm(x, weight, bias, eps):
    """LayerNorm over the last axis with biased variance; weight/bias None means no affine (§1.2, §1.5)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y if weight is None else y * weight + bias


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    """Exact (erf) GELU: x/2 (1 + erf(x / sqrt 2)), timm's nn.GELU default (spec §1.2)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def linear(w, name, x):
    """nn.Linear named name: x @ weight.T + bias (weights are [out, in], §1.6)."""
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def _ln(w, name, x, eps):
    """The affine LayerNorm named name (§1.2)."""
    return layer_norm(x, w[name + ".weight"], w[name + ".bias"], eps)


def vit_attention(w, prefix, x, n_head):
    """timm Attention on x [seq, D]: fused qkv (bias) split as [3, heads, head_dim], softmax with
    scale head_dim^-0.5 and no mask (bidirectional), heads concatenated, then proj (spec §1.2)."""
    seq, d = x.shape
    hd = d // n_head
    qkv = linear(w, prefix + "attn.qkv", x).reshape(seq, 3, n_head, hd)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    probs = common.softmax(np.einsum("qhd,khd->hqk", q, k) * hd ** -0.5, axis=-1)
    out = np.einsum("hqk,khd->qhd", probs, v).reshape(seq, d)
    return linear(w, prefix + "attn.proj", out)


def vit_block(w, prefix, x, n_head, eps):
    """timm Block (pre-LN): x + attn(norm1 x), then x + fc2(gelu(fc1(norm2 x))) (spec §1.2)."""
    x = x + vit_attention(w, prefix, _ln(w, prefix + "norm1", x, eps), n_head)
    h = gelu(linear(w, prefix + "mlp.fc1", _ln(w, prefix + "norm2", x, eps)))
    return x + linear(w, prefix + "mlp.fc2", h)


def class_embedding(w, label):
    """Row label of class_emb, or fake_latent (the CFG / unconditional embedding) for None (spec §1.3-1.4)."""
    if label is None:
        return w["fake_latent"][0]
    return w["class_emb.weight"][int(label)]


def _with_buffer(cfg, mask):
    """The mask over buffer + tokens: the buffer_size buffer rows are never masked (spec §1.3 step 2)."""
    return np.concatenate([np.zeros(cfg["buffer_size"], dtype=bool), np.asarray(mask, dtype=bool)])


def mae_encoder(w, cfg, tokens, mask, class_emb):
    """Encoder output [buffer_size + visible, De] (spec §1.3 steps 1-5).

    z_proj(tokens), prepend buffer_size rows all set to class_emb, add encoder_pos_embed_learned,
    z_proj_ln, keep only the unmasked rows (buffer first, then visible tokens in position order),
    encoder_blocks, encoder_norm. The values of masked tokens never matter.
    """
    eps = cfg["norm_eps"]
    x = linear(w, "z_proj", np.asarray(tokens, dtype=np.float64))
    buffer = np.repeat(class_emb[None], cfg["buffer_size"], axis=0)
    x = np.concatenate([buffer, x], axis=0) + w["encoder_pos_embed_learned"][0]
    x = _ln(w, "z_proj_ln", x, eps)
    x = x[~_with_buffer(cfg, mask)]
    for i in range(cfg["encoder_depth"]):
        x = vit_block(w, f"encoder_blocks.{i}.", x, cfg["encoder_num_heads"], eps)
    return _ln(w, "encoder_norm", x, eps)


def mae_decoder(w, cfg, x, mask):
    """Head conditions z [seq_len, Dd] from the encoder output x (spec §1.3 steps 6-7).

    decoder_embed(x) is scattered back to the unmasked rows of a [buffer + seq_len, Dd] array
    filled with mask_token; add decoder_pos_embed_learned, decoder_blocks, decoder_norm; drop the
    buffer rows and add diffusion_pos_embed_learned.
    """
    eps = cfg["norm_eps"]
    full_mask = _with_buffer(cfg, mask)
    h = np.repeat(w["mask_token"][0], len(full_mask), axis=0)
    h[~full_mask] = linear(w, "decoder_embed", x)
    h = h + w["decoder_pos_embed_learned"][0]
    for i in range(cfg["decoder_depth"]):
        h = vit_block(w, f"decoder_blocks.{i}.", h, cfg["decoder_num_heads"], eps)
    h = _ln(w, "decoder_norm", h, eps)
    return h[cfg["buffer_size"]:] + w["diffusion_pos_embed_learned"][0]


def enc_dec(w, cfg, tokens, mask, label):
    """z [seq_len, Dd] for tokens [seq_len, C] under mask (True = unknown) and class label
    (None = fake_latent), as MAR's enc_dec (spec §1.3)."""
    x = mae_encoder(w, cfg, tokens, mask, class_embedding(w, label))
    return mae_decoder(w, cfg, x, mask)


# ---------------------------------------------------------------------------------------------
# Generation schedule (spec §1.4)
# ---------------------------------------------------------------------------------------------

def mask_by_order(mask_len, order):
    """Boolean mask [len(order)] with the positions order[:mask_len] masked (§1.4)."""
    mask = np.zeros(len(order), dtype=bool)
    mask[np.asarray(order[:mask_len], dtype=np.int64)] = True
    return mask


def next_mask_len(step, num_iter, seq_len, num_masked):
    """Tokens still masked after step: floor(seq_len cos(pi/2 (step+1)/num_iter)), clamped to
    [1, num_masked - 1] with the lower bound winning (spec §1.4)."""
    k = math.floor(seq_len * np.cos(math.pi / 2.0 * (step + 1) / num_iter))
    return max(1, min(num_masked - 1, k))


def step_masks(order, step, num_iter, mask):
    """(mask_next, mask_to_pred, mask_len) of one generation step from the current mask.

    mask_next masks order[:mask_len]; mask_to_pred = mask XOR mask_next, except at the last
    step (step >= num_iter - 1), which predicts every position still masked (spec §1.4).
    """
    mask = np.asarray(mask, dtype=bool)
    mask_len = next_mask_len(step, num_iter, len(order), int(mask.sum()))
    mask_next = mask_by_order(mask_len, order)
    to_pred = mask.copy() if step >= num_iter - 1 else mask ^ mask_next
    return mask_next, to_pred, mask_len


def tokens_per_step(num_iter, seq_len):
    """Number of tokens each of the num_iter steps predicts (spec §1.4, test U2)."""
    order = np.arange(seq_len)
    mask = np.ones(seq_len, dtype=bool)
    counts = []
    for step in range(num_iter):
        mask_next, to_pred, _ = step_masks(order, step, num_iter, mask)
        counts.append(int(to_pred.sum()))
        mask = mask_next
    return counts


def cfg_at_step(schedule, cfg, mask_len, seq_len):
    """Guidance scale of a step: "linear" 1 + (cfg - 1)(seq_len - mask_len)/seq_len (Muse), with
    mask_len the clamped count still masked after the step, or "constant" cfg (spec §1.4)."""
    if schedule == "linear":
        return 1.0 + (cfg - 1.0) * (seq_len - mask_len) / seq_len
    if schedule == "constant":
        return float(cfg)
    raise ValueError(f"unknown cfg schedule {schedule!r}")


# ---------------------------------------------------------------------------------------------
# Diffusion schedule (spec §1.5)
# ---------------------------------------------------------------------------------------------

def cosine_betas(diffusion_steps=1000, max_beta=0.999):
    """beta_i = min(1 - abar((i+1)/T)/abar(i/T), max_beta), abar(u) = cos((u + 0.008)/1.008 pi/2)^2 (§1.5)."""
    def abar(u):
        """The cosine alpha-bar of §1.5."""
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - abar((i + 1) / diffusion_steps) / abar(i / diffusion_steps), max_beta)
                     for i in range(diffusion_steps)])


def space_timesteps(num_timesteps, section_counts):
    """Sorted original timesteps kept by respacing into sections of section_counts steps each:
    within a section of size n taking c steps, start + round(j (n - 1)/(c - 1)) (Python round; §1.5)."""
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        steps += [start + round(j * stride) for j in range(count)]
        start += size
    return sorted(set(steps))


def respaced_schedule(num_sampling_steps=100, diffusion_steps=1000):
    """The respaced cosine schedule as a dict of float64 arrays over k = 0..K-1 (spec §1.5).

    timestep_map (original t fed to the head), betas (beta'_k = 1 - abar_{t_k}/abar_{t_{k-1}}),
    alphas_cumprod, alphas_cumprod_prev, posterior_variance, posterior_log_variance_clipped
    (entry 0 replaced by entry 1), log_betas, coef1, coef2 (posterior mean), sqrt_recip_alphas_cumprod
    and sqrt_recipm1_alphas_cumprod (x0 from eps).
    """
    base_abar = np.cumprod(1.0 - cosine_betas(diffusion_steps))
    tmap = space_timesteps(diffusion_steps, [num_sampling_steps])
    kept = base_abar[tmap]
    betas = 1.0 - kept / np.append(1.0, kept[:-1])
    abar = np.cumprod(1.0 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    return {
        "timestep_map": np.array(tmap, dtype=np.int64),
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.append(post_var[1], post_var[1:])),
        "log_betas": np.log(betas),
        "coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "coef2": (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
    }


# ---------------------------------------------------------------------------------------------
# Diffusion head: SimpleMLPAdaLN (spec §1.5)
# ---------------------------------------------------------------------------------------------

def timestep_embedding(t, dim=FREQ_DIM, max_period=10000):
    """Sinusoid [n, dim] of timesteps t [n]: freqs_k = exp(-ln(max_period) k/half), cos first (§1.5).

    (The official code computes freqs and t * freqs in float32; this is float64.)
    """
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / half)
    args = np.asarray(t, dtype=np.float64)[:, None] * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], axis=-1)


def _adaln_chunks(w, name, y, parts):
    """adaLN_modulation = [SiLU, Linear named name] applied to y, split into `parts` equal chunks (§1.5)."""
    return np.split(linear(w, name, common.silu(y)), parts, axis=-1)


def head_res_block(w, prefix, x, y):
    """ResBlock: (shift, scale, gate) from y; x + gate * mlp(in_ln(x)(1 + scale) + shift) (§1.5)."""
    shift, scale, gate = _adaln_chunks(w, prefix + "adaLN_modulation.1", y, 3)
    h = _ln(w, prefix + "in_ln", x, 1e-6) * (1.0 + scale) + shift
    h = linear(w, prefix + "mlp.2", common.silu(linear(w, prefix + "mlp.0", h)))
    return x + gate * h


def head_forward(w, cfg, x, t, z):
    """SimpleMLPAdaLN output [n, 2C] for x [n, C], original timesteps t [n] and conditions z [n, Dd].

    y = time_embed(t) + cond_embed(z); h = input_proj(x); diffloss_d ResBlocks; final layer:
    LN without affine (eps 1e-6), (1 + scale), + shift, linear. Channels [:C] are eps,
    [C:] the LEARNED_RANGE variance value v (§1.5).
    """
    temb = linear(w, HEAD + "time_embed.mlp.2",
                  common.silu(linear(w, HEAD + "time_embed.mlp.0", timestep_embedding(t))))
    y = temb + linear(w, HEAD + "cond_embed", z)
    h = linear(w, HEAD + "input_proj", x)
    for j in range(cfg["diffloss_d"]):
        h = head_res_block(w, f"{HEAD}res_blocks.{j}.", h, y)
    shift, scale = _adaln_chunks(w, HEAD + "final_layer.adaLN_modulation.1", y, 2)
    h = layer_norm(h, None, None, 1e-6) * (1.0 + scale) + shift
    return linear(w, HEAD + "final_layer.linear", h)


def head_forward_cfg(w, cfg, x, t, z_cond, z_uncond, scale):
    """forward_with_cfg for the conditional half (spec §1.5): eps = eps_u + scale (eps_c - eps_u)
    on the first C channels, the variance channels are the conditional branch's own.
    z_uncond None means no guidance (head_forward on z_cond)."""
    out_c = head_forward(w, cfg, x, t, z_cond)
    if z_uncond is None:
        return out_c
    out_u = head_forward(w, cfg, x, t, z_uncond)
    c = x.shape[-1]
    eps = out_u[:, :c] + scale * (out_c[:, :c] - out_u[:, :c])
    return np.concatenate([eps, out_c[:, c:]], axis=-1)


def p_mean_variance(sched, k, x, model_out):
    """(mean, log_variance, pred_xstart) of p(x_{k-1} | x_k) from the head output [eps, v] at
    respaced step k (spec §1.5): LEARNED_RANGE log-variance frac log beta'_k +
    (1 - frac) log sigma~^2_clipped,k with frac = (v + 1)/2, eps prediction, no clipping."""
    c = x.shape[-1]
    eps, v = model_out[:, :c], model_out[:, c:]
    frac = (v + 1.0) / 2.0
    log_var = frac * sched["log_betas"][k] + (1.0 - frac) * sched["posterior_log_variance_clipped"][k]
    x0 = sched["sqrt_recip_alphas_cumprod"][k] * x - sched["sqrt_recipm1_alphas_cumprod"][k] * eps
    mean = sched["coef1"][k] * x0 + sched["coef2"][k] * x
    return mean, log_var, x0


def head_sample(w, cfg, sched, z_cond, z_uncond, cfg_scale, x_T, inter_noise, temperature):
    """The K-step DDPM sampler with noise from outside, as CSpD's p_sample_loop_with_noise (spec §1.5, §2.6).

    x_T [n, C] starts the chain; step k = K-1 .. 0 calls the head at timestep_map[k] and sets
    x_{k-1} = mean_k + exp(log_var_k / 2) * temperature * inter_noise[:, k] for k > 0
    (inter_noise [n, K, C]; index 0 is never used), and x_0 = mean_0 (no noise at k = 0).
    Returns a dict of [n, C] arrays: x0 (= mu0), mu0, sigma0 = exp(log_var_0 / 2) (without the
    temperature; CSpD's `variance` field is sigma0 * temperature) and sum_log_sigma =
    sum_{k=1}^{K-1} log_var_k / 2 (CSpD's `log_var`, without the temperature).
    """
    x = np.asarray(x_T, dtype=np.float64)
    n = x.shape[0]
    sum_log_sigma = np.zeros_like(x)
    for k in range(len(sched["betas"]) - 1, -1, -1):
        t = np.full(n, sched["timestep_map"][k], dtype=np.float64)
        out = head_forward_cfg(w, cfg, x, t, z_cond, z_uncond, cfg_scale)
        mean, log_var, _ = p_mean_variance(sched, k, x, out)
        if k == 0:
            return {"x0": mean, "mu0": mean, "sigma0": np.exp(0.5 * log_var), "sum_log_sigma": sum_log_sigma}
        x = mean + np.exp(0.5 * log_var) * temperature * inter_noise[:, k]
        sum_log_sigma = sum_log_sigma + 0.5 * log_var


# ---------------------------------------------------------------------------------------------
# Generation (spec §1.4, with CSpD's per-position noise)
# ---------------------------------------------------------------------------------------------

def sample_tokens(w, cfg, sched, label, order, num_iter, cfg_scale, cfg_schedule, temperature, noise, inter_noise):
    """Tokens [seq_len, C] of one image generated by MAR with a given order and noise.

    Each step runs enc_dec on the current tokens and mask (with label and, when cfg_scale != 1,
    with fake_latent for the unconditional branch), takes the step's masks from step_masks and its
    guidance from cfg_at_step, and runs head_sample on the positions to predict with the noise
    pre-drawn for those positions (noise [seq_len, C] = x_T, inter_noise [seq_len, K, C]), as
    CSpD's sample_tokens_step does (§1.4, §2.6). Initial tokens are zeros.
    """
    seq_len = len(order)
    tokens = np.zeros((seq_len, token_dim(cfg)))
    mask = np.ones(seq_len, dtype=bool)
    guided = cfg_scale != 1.0
    for step in range(num_iter):
        z_c = enc_dec(w, cfg, tokens, mask, label)
        z_u = enc_dec(w, cfg, tokens, mask, None) if guided else None
        mask_next, to_pred, mask_len = step_masks(order, step, num_iter, mask)
        scale = cfg_at_step(cfg_schedule, cfg_scale, mask_len, seq_len)
        pos = np.flatnonzero(to_pred)
        out = head_sample(w, cfg, sched, z_c[pos], None if z_u is None else z_u[pos], scale,
                          noise[pos], inter_noise[pos], temperature)
        tokens[pos] = out["x0"]
        mask = mask_next
    return tokens


# ---------------------------------------------------------------------------------------------
# KL-16 VAE decoder (spec §1.7)
# ---------------------------------------------------------------------------------------------

def _conv(w, name, x, padding):
    """The conv named name (weight and bias; §1.7)."""
    return common.conv2d(x, w[name + ".weight"], w[name + ".bias"], padding)


def vae_decode(w, cfg, z):
    """Decoder output [out_ch, h 2^(L-1), w 2^(L-1)] for a latent z [embed_dim, h, w] (spec §1.7).

    post_quant_conv (1x1) -> decoder.conv_in (3x3) -> mid.block_1, mid.attn_1, mid.block_2 ->
    up levels i = L-1 .. 0 (num_res_blocks + 1 ResnetBlocks up.{i}.block.{j}, then nearest x2
    and up.{i}.upsample.conv for i != 0) -> norm_out, swish, conv_out. GroupNorm with
    norm_groups groups, eps 1e-6. No attention outside mid.
    """
    g = cfg["norm_groups"]
    h = _conv(w, "decoder.conv_in", _conv(w, "post_quant_conv", z, 0), 1)
    h = common.resnet_block(w, "decoder.mid.block_1.", h, g)
    h = common.attn_block(w, "decoder.mid.attn_1.", h, g)
    h = common.resnet_block(w, "decoder.mid.block_2.", h, g)
    for i in reversed(range(len(cfg["ch_mult"]))):
        for j in range(cfg["num_res_blocks"] + 1):
            h = common.resnet_block(w, f"decoder.up.{i}.block.{j}.", h, g)
        if i != 0:
            h = _conv(w, f"decoder.up.{i}.upsample.conv", common.upsample_nearest(h), 1)
    h = common.swish(common.group_norm(h, w["decoder.norm_out.weight"], w["decoder.norm_out.bias"], g))
    return _conv(w, "decoder.conv_out", h, 1)


def tokens_to_latent(mar_cfg, vae_cfg, tokens):
    """The VAE input for generated tokens [seq_len, C]: unpatchify, divided by scale_factor
    (0.2325 for the released models; spec §1.1)."""
    n = grid_size(mar_cfg)
    latent = unpatchify(np.asarray(tokens, dtype=np.float64), mar_cfg["vae_embed_dim"], n, n, mar_cfg["patch_size"])
    return latent / vae_cfg["scale_factor"]


def pixels_to_rgb(x):
    """MAR's image mapping: uint8 [H, W, 3] = round(clip((x + 1)/2 * 255, 0, 255)) (NumPy round,
    half to even) of decoder output x [3, H, W] (§1.7; engine_mar.py)."""
    y = np.round(np.clip((np.asarray(x, dtype=np.float64) + 1.0) / 2.0 * 255.0, 0.0, 255.0))
    return np.ascontiguousarray(y.astype(np.uint8).transpose(1, 2, 0))
