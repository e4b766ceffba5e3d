//! Typed device memory over a [`Driver`]'s untyped allocations: activation buffers, weights (f32
//! or bf16), the KV pool, and the builder of kernel parameter lists.

use std::marker::PhantomData;

use bytemuck::Pod;

use super::driver::{Driver, KernelArg, Launch};
use crate::backend::KvShape;
use crate::error::{Error, Result};

/// `len` elements of `T` in one device allocation of room for `capacity`.
pub struct DevVec<T, D: Driver> {
    pub(crate) mem: D::Mem,
    len: usize,
    capacity: usize,
    _elem: PhantomData<T>,
}

impl<T: Pod, D: Driver> DevVec<T, D> {
    /// `len` zeroed elements.
    pub(crate) fn zeros(driver: &D, len: usize) -> Result<Self> {
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(|| Error::Backend(format!("allocation of {len} elements overflows")))?;
        Ok(Self { mem: driver.alloc_zeroed(bytes)?, len, capacity: len, _elem: PhantomData })
    }

    /// Whether `len` elements fit without reallocating.
    pub(crate) fn fits(&self, len: usize) -> bool {
        len <= self.capacity
    }

    /// Hold `len` elements; reallocates (zeroed) only beyond the capacity. Returns whether it did.
    pub(crate) fn resize(&mut self, driver: &D, len: usize) -> Result<bool> {
        if len <= self.capacity {
            self.len = len;
            return Ok(false);
        }
        *self = Self::zeros(driver, len)?;
        Ok(true)
    }

    /// A device copy of `values`.
    pub(crate) fn from_host(driver: &D, values: &[T]) -> Result<Self> {
        let mut vec = Self::zeros(driver, values.len())?;
        if !values.is_empty() {
            driver.write(&mut vec.mem, bytemuck::cast_slice(values))?;
        }
        Ok(vec)
    }

    /// Copy back to the host.
    pub(crate) fn to_host(&self, driver: &D) -> Result<Vec<T>> {
        let mut out = vec![T::zeroed(); self.len];
        if self.len > 0 {
            driver.read(&self.mem, bytemuck::cast_slice_mut(&mut out))?;
        }
        Ok(out)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An f32 activation buffer.
pub type GpuBuf<D> = DevVec<f32, D>;

/// A u32 buffer (index lists, drafted tokens, a step's decisions).
pub type GpuWords<D> = DevVec<u32, D>;

/// A weight tensor. bf16 matrices stay bf16 (half the memory and bandwidth; GEMMs run on bf16
/// inputs with f32 accumulation); everything else is f32.
pub enum GpuWeight<D: Driver> {
    /// f32 values (f32 and f16 files, vectors, synthetic weights).
    F32(GpuBuf<D>),
    /// bf16 bit patterns of a 2-D tensor stored as bf16 in its file.
    Bf16(DevVec<u16, D>),
}

impl<D: Driver> GpuWeight<D> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GpuWeight::F32(buf) => buf.len(),
            GpuWeight::Bf16(bits) => bits.len(),
        }
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 values, or an error naming `op` for a bf16 weight (vectors are always f32).
    pub(crate) fn f32(&self, op: &str) -> Result<&GpuBuf<D>> {
        match self {
            GpuWeight::F32(buf) => Ok(buf),
            GpuWeight::Bf16(_) => Err(Error::Backend(format!("{op}: expects an f32 weight, got a bf16 matrix"))),
        }
    }
}

/// Keys and values of every layer in one allocation of `2 * n_layer` planes of
/// `[num_slots, n_head * head_dim]`: keys of layers `0..n_layer`, then values; f32 or bf16
/// elements as the shape's dtype says.
pub struct GpuKvPool<D: Driver> {
    pub(crate) shape: KvShape,
    pub(crate) data: KvData<D>,
}

/// The elements of a KV pool.
pub enum KvData<D: Driver> {
    /// f32 elements.
    F32(GpuBuf<D>),
    /// bf16 bit patterns.
    Bf16(DevVec<u16, D>),
}

impl<D: Driver> GpuKvPool<D> {
    /// The pool's geometry.
    pub fn shape(&self) -> KvShape {
        self.shape
    }

    /// Elements in one plane.
    pub(crate) fn plane_len(&self) -> usize {
        self.shape.num_slots() * self.shape.row_width()
    }

    /// Element offset of the key plane (`value = false`) or value plane of `layer`.
    pub(crate) fn plane_offset(&self, layer: usize, value: bool) -> usize {
        (usize::from(value) * self.shape.n_layer + layer) * self.plane_len()
    }
}

/// Builds one [`Launch`]: geometry, then the parameters in the kernel's C order. Buffers a
/// kernel writes are passed by `&mut`, so the borrow checker sees every write.
pub(crate) struct LaunchBuilder<'d, D: Driver> {
    driver: &'d D,
    launch: Launch,
}

impl<'d, D: Driver> LaunchBuilder<'d, D> {
    /// `grid` blocks (x, y) of `threads` threads, no dynamic shared memory.
    pub(crate) fn new(driver: &'d D, grid: (usize, usize), threads: u32) -> Result<Self> {
        Self::new_3d(driver, (grid.0, grid.1, 1), threads)
    }

    /// A launch of a three-dimensional grid of blocks of `threads` threads.
    pub(crate) fn new_3d(driver: &'d D, grid: (usize, usize, usize), threads: u32) -> Result<Self> {
        let dim = |n: usize| u32::try_from(n).map_err(|_| Error::Backend(format!("grid dimension {n} exceeds u32")));
        Ok(Self { driver, launch: Launch { grid: [dim(grid.0)?, dim(grid.1)?, dim(grid.2)?], block: [threads, 1, 1], shared_bytes: 0, args: Vec::new() } })
    }

    /// `bytes` of dynamic shared memory per block (`extern __shared__`).
    pub(crate) fn dynamic_shared(mut self, bytes: usize) -> Result<Self> {
        self.launch.shared_bytes = u32::try_from(bytes).map_err(|_| Error::Backend(format!("dynamic shared memory of {bytes} bytes exceeds u32")))?;
        Ok(self)
    }

    /// One thread per element of `n`, `threads` per block.
    pub(crate) fn elementwise(driver: &'d D, n: usize, threads: u32) -> Result<Self> {
        Self::new(driver, (n.div_ceil(threads as usize), 1), threads)
    }

    /// A buffer the kernel reads.
    pub(crate) fn input<T>(self, buf: &DevVec<T, D>) -> Self {
        let address = self.driver.address(&buf.mem);
        self.arg(KernelArg::Ptr(address))
    }

    /// The KV pool's elements, which the kernel reads, from element `offset` on.
    pub(crate) fn kv_input_at(self, data: &KvData<D>, offset: usize) -> Self {
        match data {
            KvData::F32(buf) => self.input_at(buf, offset),
            KvData::Bf16(buf) => self.input_at(buf, offset),
        }
    }

    /// The KV pool's elements, which the kernel writes.
    pub(crate) fn kv_output(self, data: &mut KvData<D>) -> Self {
        match data {
            KvData::F32(buf) => self.output(buf),
            KvData::Bf16(buf) => self.output(buf),
        }
    }

    /// A buffer the kernel reads, from element `offset` on.
    pub(crate) fn input_at<T>(self, buf: &DevVec<T, D>, offset: usize) -> Self {
        let address = self.driver.address(&buf.mem) + (offset * size_of::<T>()) as u64;
        self.arg(KernelArg::Ptr(address))
    }

    /// A buffer the kernel writes (and may read).
    pub(crate) fn output<T>(self, buf: &mut DevVec<T, D>) -> Self {
        let address = self.driver.address_mut(&mut buf.mem);
        self.arg(KernelArg::Ptr(address))
    }

    /// A buffer the kernel writes (and may read), from element `offset` on.
    pub(crate) fn output_at<T>(self, buf: &mut DevVec<T, D>, offset: usize) -> Self {
        let address = self.driver.address_mut(&mut buf.mem) + (offset * size_of::<T>()) as u64;
        self.arg(KernelArg::Ptr(address))
    }

    /// A null pointer (an optional buffer the kernel does not get).
    pub(crate) fn null(self) -> Self {
        self.arg(KernelArg::Ptr(0))
    }

    /// `int`.
    pub(crate) fn i32(self, value: usize) -> Result<Self> {
        let v = i32::try_from(value).map_err(|_| Error::Backend(format!("kernel parameter {value} exceeds int")))?;
        Ok(self.arg(KernelArg::I32(v)))
    }

    /// `unsigned long long`.
    pub(crate) fn u64(self, value: usize) -> Self {
        self.arg(KernelArg::U64(value as u64))
    }

    /// `float`.
    pub(crate) fn f32(self, value: f32) -> Self {
        self.arg(KernelArg::F32(value))
    }

    fn arg(mut self, arg: KernelArg) -> Self {
        self.launch.args.push(arg);
        self
    }

    /// The finished description.
    pub(crate) fn build(self) -> Launch {
        self.launch
    }
}
