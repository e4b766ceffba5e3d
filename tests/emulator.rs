//! The CUDA emulator itself (kernels/emu/, self-test kernels in kernels/emu/selftest.cu): its
//! barriers and warp intrinsics compute what CUDA specifies, its misuse detection stops a bad
//! kernel with a message naming the fault and the source line, shared memory is poisoned so a
//! missing `__syncthreads` shows up as NaN, and its 16-bit conversions are bit-exact.
#![cfg(feature = "emulator")]

mod common;

use spire::backend::emu::{launch_by_name, EmuDriver};
use spire::backend::gpu::{GpuBackend, GpuBuf, KernelArg, Launch};
use spire::backend::Backend;

fn emu() -> &'static GpuBackend<EmuDriver> {
    common::devices::emulator()
}

/// A zeroed device buffer of `words` 32-bit words (kernels may store ints or floats in it).
fn words(words: usize) -> GpuBuf<EmuDriver> {
    emu().zeros(words).unwrap()
}

/// The buffer's words as raw bits.
fn bits(buf: &GpuBuf<EmuDriver>) -> Vec<u32> {
    emu().download(buf).unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Launch self-test kernel `name` with `grid` x `block` threads, `shared` dynamic bytes.
fn launch(name: &str, grid: [u32; 3], block: [u32; 3], shared: u32, args: &[KernelArg]) -> spire::Result<()> {
    let launch = Launch { grid, block, shared_bytes: shared, args: args.to_vec() };
    // SAFETY: every call below passes the parameter list documented beside the kernel in
    // kernels/emu/selftest.cu, with buffers at least as large as the kernel touches.
    unsafe { launch_by_name(name, &launch) }
}

fn ptr(buf: &GpuBuf<EmuDriver>) -> KernelArg {
    KernelArg::Ptr(emu().address_of(buf))
}

/// The error a misbehaving kernel must stop with.
fn misuse(name: &str, grid: [u32; 3], block: [u32; 3], args: &[KernelArg]) -> String {
    match launch(name, grid, block, 0, args) {
        Ok(()) => panic!("{name}: the emulator accepted a kernel that misuses a barrier"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "message lacks `{part}`: {message}");
    }
}

#[test]
fn a_missing_syncthreads_reads_poisoned_shared_memory() {
    let (rows, n) = (3, 1000);
    let x = emu().upload(&(0..rows * n).map(|i| (i % 7) as f32).collect::<Vec<_>>()).unwrap();
    let out = words(rows);
    launch("block_sum_ok", [rows as u32, 1, 1], [256, 1, 1], 0, &[ptr(&x), KernelArg::I32(n as i32), ptr(&out)]).unwrap();
    let sums = emu().download(&out).unwrap();
    for (r, sum) in sums.iter().enumerate() {
        let want: f32 = (0..n).map(|i| ((r * n + i) % 7) as f32).sum();
        assert_eq!(*sum, want, "block_sum_ok row {r}");
    }
    // The same reduction with its first barrier removed: warp 0 reads partial sums no other warp
    // has written yet, which hold the NaN poison (deterministically, by the scheduling order).
    launch("racy_block_sum", [rows as u32, 1, 1], [256, 1, 1], 0, &[ptr(&x), KernelArg::I32(n as i32), ptr(&out)]).unwrap();
    assert!(emu().download(&out).unwrap().iter().all(|v| v.is_nan()), "the race was not caught by shared-memory poisoning");
}

#[test]
fn threads_at_different_barriers_are_reported() {
    let out = words(64);
    let message = misuse("divergent_sync", [1, 1, 1], [64, 1, 1], &[ptr(&out)]);
    assert_mentions(&message, &["divergent barrier", "__syncthreads", "selftest.cu:"]);
}

#[test]
fn a_thread_returning_while_others_wait_is_reported() {
    let out = words(64);
    let message = misuse("early_return", [1, 1, 1], [64, 1, 1], &[KernelArg::I32(40), ptr(&out)]);
    assert_mentions(&message, &["returned while 40 threads wait at __syncthreads", "selftest.cu:"]);
    let message = misuse("shfl_partner_exited", [1, 1, 1], [32, 1, 1], &[ptr(&out)]);
    assert_mentions(&message, &["returned while", "__shfl_xor_sync"]);
}

#[test]
fn warp_intrinsic_misuse_is_reported() {
    let out = words(64);
    let message = misuse("shfl_lane_not_in_mask", [1, 1, 1], [32, 1, 1], &[ptr(&out)]);
    assert_mentions(&message, &["does not include its own lane", "__shfl_sync(mask 0xfffffffe)"]);
    let message = misuse("shfl_mask_mismatch", [1, 1, 1], [32, 1, 1], &[ptr(&out)]);
    assert_mentions(&message, &["disagree at a warp rendezvous"]);
    let message = misuse("shfl_src_not_in_mask", [1, 1, 1], [32, 1, 1], &[ptr(&out)]);
    assert_mentions(&message, &["reads lane 20", "not in the mask"]);
    let message = misuse("warp_deadlock", [1, 1, 1], [32, 1, 1], &[ptr(&out)]);
    assert_mentions(&message, &["deadlock", "__shfl_xor_sync", "__syncthreads"]);
}

#[test]
fn bad_launch_geometry_is_an_error() {
    let out = words(64);
    let message = launch("geometry_ids", [1, 1, 1], [2048, 1, 1], 0, &[ptr(&out), ptr(&out)]).unwrap_err().to_string();
    assert!(message.contains("1024"), "{message}");
}

#[test]
fn geometry_and_warp_intrinsics_follow_cuda() {
    // grid (2,3,1) x block (4,2,3): out[i] = linear global thread index, warp[i] = threads per block.
    let (ids, warp) = (words(144), words(144));
    launch("geometry_ids", [2, 3, 1], [4, 2, 3], 0, &[ptr(&ids), ptr(&warp)]).unwrap();
    assert_eq!(bits(&ids), (0..144).collect::<Vec<u32>>());
    assert!(bits(&warp).iter().all(|&w| w == 24));

    let out = words(16 * 64);
    launch("warp_intrinsics", [1, 1, 1], [64, 1, 1], 0, &[ptr(&out)]).unwrap();
    let got = bits(&out);
    for t in 0..64u32 {
        let l = t % 32;
        let want: [u32; 16] = [
            0x4924_9249,
            1,
            0,
            if l == 0 { 0 } else { 10 * (l - 1) },
            if l >= 30 { 10 * l } else { 10 * (l + 2) },
            l ^ 5,
            21,
            (l & !7) | ((l + 1) & 7),
            if l % 16 == 15 { l } else { l + 1 },
            if l < 10 { 0x3ff } else { 0xffff_fc00 },
            3 * (t ^ 1),
            16,
            1,
            l ^ 1,
            31,
            if l < 16 { 0xffff } else { 0xaaaa_0000 },
        ];
        for (k, &w) in want.iter().enumerate() {
            assert_eq!(got[k * 64 + t as usize], w, "row {k}, thread {t}");
        }
    }
}

#[test]
fn dynamic_shared_memory_is_poisoned_per_block() {
    let n = 128;
    let input = emu().upload(&(0..2 * n).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let (out, before) = (words(2 * n), words(2 * n));
    launch("dynamic_shared_reverse", [2, 1, 1], [n as u32, 1, 1], 4 * n as u32, &[ptr(&input), KernelArg::I32(n as i32), ptr(&out), ptr(&before)]).unwrap();
    let got = emu().download(&out).unwrap();
    for b in 0..2 {
        for t in 0..n {
            assert_eq!(got[b * n + t], (b * n + n - 1 - t) as f32);
        }
    }
    assert!(bits(&before).iter().all(|&w| w == 0xffff_ffff), "dynamic shared memory was not poisoned before a block");
}

#[test]
fn atomics_from_every_thread_of_several_blocks() {
    let bufs: Vec<GpuBuf<EmuDriver>> = (0..8).map(|i| words(if i == 4 { 2 } else { 1 })).collect();
    let args: Vec<KernelArg> = bufs.iter().map(ptr).collect();
    launch("atomics_test", [4, 1, 1], [256, 1, 1], 0, &args).unwrap();
    let value = |i: usize| bits(&bufs[i])[0];
    assert_eq!(f32::from_bits(value(0)), 512.0, "atomicAdd(float)");
    assert_eq!(value(1) as i32, 523_776, "atomicAdd(int)");
    assert_eq!(value(2), 1023, "atomicMax(unsigned)");
    assert_eq!(value(3) as i32, -1023, "atomicMin(int)");
    assert_eq!(bits(&bufs[4]), vec![1024, 0], "atomicAdd(unsigned long long)");
    assert_eq!(value(5), 0xffff_ffff, "atomicOr");
    assert_eq!(value(6), 1024, "atomicCAS loop");
    assert_eq!(value(7), 0, "atomicExch");
}

#[test]
fn bf16_and_half_conversions_match_the_half_crate_bit_for_bit() {
    const INPUTS: [u32; 20] = [
        0x0000_0000, 0x8000_0000, 0x3f80_0000, 0xc020_0000, 0x477f_e000, 0x477f_f000, 0x477f_efff, 0x3380_0000, 0x3300_0000, 0x3300_0001,
        0x387f_c000, 0x3f80_8000, 0x3f81_8000, 0x7f7f_ffff, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 0xff80_0001, 0x0000_0001, 0x807f_ffff,
    ];
    let (bf, hf, bf_back, hf_back) = (words(10), words(10), words(20), words(20));
    launch("convert_special", [1, 1, 1], [32, 1, 1], 0, &[ptr(&bf), ptr(&hf), ptr(&bf_back), ptr(&hf_back)]).unwrap();
    let halves = |buf: &GpuBuf<EmuDriver>| -> Vec<u16> { bits(buf).iter().flat_map(|w| [*w as u16, (*w >> 16) as u16]).collect() };
    let (bf, hf) = (halves(&bf), halves(&hf));
    for (i, &input) in INPUTS.iter().enumerate() {
        let x = f32::from_bits(input);
        let (want_bf, want_hf) = (half::bf16::from_f32(x), half::f16::from_f32(x));
        if x.is_nan() {
            assert!(half::bf16::from_bits(bf[i]).is_nan() && half::f16::from_bits(hf[i]).is_nan(), "input {i}: NaN must stay NaN");
        } else {
            assert_eq!(bf[i], want_bf.to_bits(), "bf16 of input {i} ({x:e})");
            assert_eq!(hf[i], want_hf.to_bits(), "half of input {i} ({x:e})");
        }
    }
    let back = |buf: &GpuBuf<EmuDriver>| emu().download(buf).unwrap();
    for (i, (b, h)) in back(&bf_back).iter().zip(back(&hf_back)).enumerate() {
        assert_eq!(b.to_bits(), half::bf16::from_bits(bf[i]).to_f32().to_bits(), "bf16 -> f32 of entry {i}");
        assert_eq!(h.to_bits(), half::f16::from_bits(hf[i]).to_f32().to_bits(), "half -> f32 of entry {i}");
    }
}
