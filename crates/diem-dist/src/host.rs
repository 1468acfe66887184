//! Staging tensors through host memory for the MPI back end: tensors grouped by dtype, one flat CPU buffer
//! per group, and byte or element views of those buffers for MPI.
//!
//! Safety rests on [`HostBuf`]: a CPU tensor that this module allocates itself and never hands out, so the
//! slices it lends are the only way to reach its storage while they live.

use tch::kind::Element;
use tch::{Device, Kind, Tensor};

use crate::{DistError, Result};

/// The element types that host buffers are viewed as: plain numbers, valid for any bit pattern, that MPI
/// reduces natively.
pub(crate) trait Number: Element + ::mpi::datatype::Equivalence + Copy {}
impl Number for f32 {}
impl Number for f64 {}

/// A stable code for a dtype, the same on every rank (libtorch's `ScalarType` numbering, which tch mirrors).
pub(crate) fn kind_code(kind: Kind) -> u64 {
    match kind {
        Kind::Uint8 => 0,
        Kind::Int8 => 1,
        Kind::Int16 => 2,
        Kind::Int => 3,
        Kind::Int64 => 4,
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::Double => 7,
        Kind::ComplexHalf => 8,
        Kind::ComplexFloat => 9,
        Kind::ComplexDouble => 10,
        Kind::Bool => 11,
        Kind::QInt8 => 12,
        Kind::QUInt8 => 13,
        Kind::QInt32 => 14,
        Kind::BFloat16 => 15,
        Kind::Float8e5m2 => 23,
        Kind::Float8e4m3fn => 24,
        Kind::Float8e5m2fnuz => 25,
        Kind::Float8e4m3fnuz => 26,
    }
}

/// The dtype of a [`kind_code`], `None` for a code no dtype has.
pub(crate) fn kind_from_code(code: u64) -> Option<Kind> {
    const ALL: [Kind; 20] = [
        Kind::Uint8,
        Kind::Int8,
        Kind::Int16,
        Kind::Int,
        Kind::Int64,
        Kind::Half,
        Kind::Float,
        Kind::Double,
        Kind::ComplexHalf,
        Kind::ComplexFloat,
        Kind::ComplexDouble,
        Kind::Bool,
        Kind::QInt8,
        Kind::QUInt8,
        Kind::QInt32,
        Kind::BFloat16,
        Kind::Float8e5m2,
        Kind::Float8e4m3fn,
        Kind::Float8e5m2fnuz,
        Kind::Float8e4m3fnuz,
    ];
    ALL.into_iter().find(|k| kind_code(*k) == code)
}

/// The tensors of one dtype, by their positions in the caller's list, in list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    /// Their dtype.
    pub kind: Kind,
    /// Their positions in the list.
    pub indices: Vec<usize>,
    /// Their total number of elements.
    pub numel: usize,
}

/// Checks that every tensor is defined and groups those that `select` picks by dtype, in the order of
/// [`kind_code`] (the same on every rank whatever the list's order of dtypes).
pub(crate) fn groups(
    op: &'static str,
    tensors: &[Tensor],
    select: impl Fn(usize, &Tensor) -> bool,
) -> Result<Vec<Group>> {
    let mut out: Vec<Group> = Vec::new();
    for (index, t) in tensors.iter().enumerate() {
        if !t.defined() {
            return Err(DistError::Tensor { op, index, reason: "the tensor is undefined".into() });
        }
        if !select(index, t) {
            continue;
        }
        let kind = t.f_kind()?;
        let numel = t.numel();
        match out.iter_mut().find(|g| g.kind == kind) {
            Some(g) => {
                g.indices.push(index);
                g.numel += numel;
            }
            None => out.push(Group { kind, indices: vec![index], numel }),
        }
    }
    out.sort_by_key(|g| kind_code(g.kind));
    Ok(out)
}

/// A 64-bit FNV-1a hash, for layout fingerprints (stable across processes and builds, unlike `std`'s
/// `DefaultHasher`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn add(&mut self, value: u64) {
        for b in value.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

/// What every rank must agree on before a tensor collective: a hash of the collective, its root and every
/// tensor's dtype and shape (and device type when `with_device`), the number of tensors and their total
/// number of elements. The two counts travel beside the hash so that a mismatch can be described.
pub(crate) fn layout(op: &str, root: usize, tensors: &[Tensor], with_device: bool) -> Result<[u64; 3]> {
    let mut h = Fnv::new();
    for b in op.bytes() {
        h.add(u64::from(b));
    }
    h.add(root as u64);
    let mut numel = 0u64;
    for t in tensors {
        if !t.defined() {
            h.add(u64::MAX);
            continue;
        }
        h.add(kind_code(t.f_kind()?));
        if with_device {
            h.add(u64::from(t.device().is_cuda()));
        }
        let size = t.size();
        h.add(size.len() as u64);
        for d in &size {
            h.add(*d as u64);
        }
        numel += t.numel() as u64;
    }
    Ok([h.finish(), tensors.len() as u64, numel])
}

/// A flat CPU tensor owned by this module.
///
/// Invariant: `tensor` is a defined, contiguous CPU tensor of `len` initialized elements of `kind` that this
/// module allocated (zeroed, or fully written by a copy before anything reads it); no other `Tensor` handle to
/// its storage outlives a method call of this type. So a slice lent by [`HostBuf::bytes`] or [`HostBuf::bytes_mut`] (borrowing `self`) is the only
/// access to the storage while it lives.
pub(crate) struct HostBuf {
    tensor: Tensor,
    kind: Kind,
    len: usize,
}

impl HostBuf {
    /// A zeroed buffer of `len` elements of `kind` in host memory.
    pub(crate) fn zeros(kind: Kind, len: usize) -> Result<Self> {
        let tensor = Tensor::f_zeros([Self::dim(len)?], (kind, Device::Cpu))?;
        Ok(Self { tensor, kind, len })
    }

    fn dim(len: usize) -> Result<i64> {
        i64::try_from(len).map_err(|_| DistError::Mpi(format!("{len} elements do not fit an i64")))
    }

    /// A buffer holding the `group`'s tensors of `tensors`, flattened and concatenated in list order. The
    /// tensors may live on any device and have any strides.
    pub(crate) fn stage(tensors: &[Tensor], group: &Group) -> Result<Self> {
        // Uninitialized at first, but `fill` writes every element (the group's tensors hold `numel`
        // elements in all) before the buffer is returned or read.
        let tensor = Tensor::f_empty([Self::dim(group.numel)?], (group.kind, Device::Cpu))?;
        let mut buf = Self { tensor, kind: group.kind, len: group.numel };
        buf.fill(tensors, group)?;
        Ok(buf)
    }

    /// Overwrites the buffer with the `group`'s tensors, as [`HostBuf::stage`] does (same dtype and length).
    pub(crate) fn fill(&mut self, tensors: &[Tensor], group: &Group) -> Result<()> {
        if group.kind != self.kind || group.numel != self.len {
            return Err(DistError::Mpi(format!(
                "internal error: staging {} {:?} elements into a buffer of {} {:?}",
                group.numel, group.kind, self.len, self.kind
            )));
        }
        let mut offset = 0i64;
        for &i in &group.indices {
            let t = &tensors[i];
            let n = t.numel() as i64;
            if n > 0 {
                let mut dst = self.tensor.f_narrow(0, offset, n)?.f_view(t.size().as_slice())?;
                dst.f_copy_(t)?;
            }
            offset += n;
        }
        Ok(())
    }

    /// A buffer holding a copy of `t`, flattened.
    pub(crate) fn from_tensor(t: &Tensor) -> Result<Self> {
        let kind = t.f_kind()?;
        let group = Group { kind, indices: vec![0], numel: t.numel() };
        Self::stage(std::slice::from_ref(t), &group)
    }

    /// Copies the buffer back into the `group`'s tensors of `tensors`, in place (any device, any strides),
    /// the inverse of [`HostBuf::stage`].
    pub(crate) fn unstage(&self, tensors: &mut [Tensor], group: &Group) -> Result<()> {
        let mut offset = 0i64;
        for &i in &group.indices {
            let t = &mut tensors[i];
            let n = t.numel() as i64;
            if n > 0 {
                let src = self.tensor.f_narrow(0, offset, n)?.f_view(t.size().as_slice())?;
                t.f_copy_(&src)?;
            }
            offset += n;
        }
        Ok(())
    }

    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The buffer as a tensor, for libtorch operations that do not keep a handle to it.
    pub(crate) fn tensor_mut(&mut self) -> &mut Tensor {
        &mut self.tensor
    }

    /// Turns the buffer into a tensor of shape `shape` (for results handed to the caller).
    pub(crate) fn into_tensor(self, shape: &[i64]) -> Result<Tensor> {
        Ok(self.tensor.f_view(shape)?)
    }

    fn byte_len(&self) -> usize {
        self.len * self.kind.elt_size_in_bytes()
    }

    /// The buffer's bytes.
    #[allow(unsafe_code)]
    pub(crate) fn bytes(&self) -> &[u8] {
        let n = self.byte_len();
        if n == 0 {
            return &[];
        }
        let ptr = self.tensor.data_ptr().cast::<u8>().cast_const();
        // SAFETY: by the type's invariant `tensor` is a contiguous CPU tensor of `len` elements of `kind`,
        // so `ptr` (non-null for a non-empty tensor) points at `n` initialized bytes of one allocation that
        // lives as long as `self.tensor`; `u8` has no alignment requirement. The slice borrows `self`, and no
        // other handle to the storage exists, so nothing mutates it while the slice lives.
        unsafe { std::slice::from_raw_parts(ptr, n) }
    }

    /// The buffer's bytes, writable.
    #[allow(unsafe_code)]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        let n = self.byte_len();
        if n == 0 {
            return &mut [];
        }
        let ptr = self.tensor.data_ptr().cast::<u8>();
        // SAFETY: as in `bytes`; the slice borrows `self` mutably, so it is the only access to the storage
        // while it lives.
        unsafe { std::slice::from_raw_parts_mut(ptr, n) }
    }

    /// The buffer's elements, which must be of type `T`.
    pub(crate) fn slice<T: Number>(&self) -> Result<&[T]> {
        self.check_element::<T>()?;
        if self.len == 0 {
            return Ok(&[]);
        }
        Ok(self.elements::<T>())
    }

    /// The buffer's elements, which must be of type `T`, writable.
    pub(crate) fn slice_mut<T: Number>(&mut self) -> Result<&mut [T]> {
        self.check_element::<T>()?;
        if self.len == 0 {
            return Ok(&mut []);
        }
        Ok(self.elements_mut::<T>())
    }

    fn check_element<T: Number>(&self) -> Result<()> {
        if T::KIND != self.kind || std::mem::size_of::<T>() != self.kind.elt_size_in_bytes() {
            return Err(DistError::Mpi(format!(
                "internal error: a {:?} buffer viewed as {:?}",
                self.kind,
                T::KIND
            )));
        }
        let align = std::mem::align_of::<T>();
        if (self.tensor.data_ptr() as usize) % align != 0 {
            return Err(DistError::Mpi(format!("internal error: host buffer not aligned to {align} bytes")));
        }
        Ok(())
    }

    #[allow(unsafe_code)]
    fn elements<T: Number>(&self) -> &[T] {
        let ptr = self.tensor.data_ptr().cast::<T>().cast_const();
        // SAFETY: `check_element` verified that the buffer holds elements of `T` (same dtype and size) and
        // that `ptr` is aligned for `T`; by the type's invariant `ptr` points at `len` elements of one
        // contiguous allocation owned by `self.tensor`, all initialized, and the slice borrows `self`. `T` is
        // a `Number` (f32 or f64), valid for any bit pattern.
        unsafe { std::slice::from_raw_parts(ptr, self.len) }
    }

    #[allow(unsafe_code)]
    fn elements_mut<T: Number>(&mut self) -> &mut [T] {
        let ptr = self.tensor.data_ptr().cast::<T>();
        // SAFETY: as in `elements`; the slice borrows `self` mutably, the only access while it lives.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.len) }
    }
}

/// Host buffers kept between collectives: the M-step all-reduces the same gradient layout every step, and
/// a fresh buffer of a few hundred megabytes costs its page faults (and zeroing) every time. Holds at most
/// [`Pool::KEEP`] buffers, the most recently returned.
#[derive(Default)]
pub(crate) struct Pool {
    bufs: std::cell::RefCell<Vec<HostBuf>>,
}

impl Pool {
    /// The most buffers kept.
    pub(crate) const KEEP: usize = 4;

    /// A buffer of `len` elements of `kind`: a kept one (holding old values) or a new zeroed one.
    pub(crate) fn take(&self, kind: Kind, len: usize) -> Result<HostBuf> {
        let mut bufs = self.bufs.borrow_mut();
        match bufs.iter().rposition(|b| b.kind == kind && b.len == len) {
            Some(i) => Ok(bufs.remove(i)),
            None => HostBuf::zeros(kind, len),
        }
    }

    /// [`Pool::take`], filled with the `group`'s tensors.
    pub(crate) fn stage(&self, tensors: &[Tensor], group: &Group) -> Result<HostBuf> {
        let mut buf = self.take(group.kind, group.numel)?;
        buf.fill(tensors, group)?;
        Ok(buf)
    }

    /// Keeps `buf` for a later [`Pool::take`], dropping the oldest kept buffer beyond [`Pool::KEEP`].
    pub(crate) fn put(&self, buf: HostBuf) {
        let mut bufs = self.bufs.borrow_mut();
        bufs.push(buf);
        if bufs.len() > Self::KEEP {
            bufs.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_and_unstage_round_trip_any_strides() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape([2, 3]).tr();
        let b = Tensor::from_slice(&[7.0f64]).reshape([1]);
        let c = Tensor::from_slice(&[8.0f32]).reshape([] as [i64; 0]);
        let mut tensors = vec![a, b, c];
        let g = groups("test", &tensors, |_, _| true).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].kind, g[0].indices.clone(), g[0].numel), (Kind::Float, vec![0, 2], 7));
        assert_eq!((g[1].kind, g[1].indices.clone(), g[1].numel), (Kind::Double, vec![1], 1));
        let mut buf = HostBuf::stage(&tensors, &g[0]).unwrap();
        // The transposed tensor is read in its logical order.
        assert_eq!(buf.slice::<f32>().unwrap(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0, 8.0]);
        assert!(buf.slice::<f64>().is_err());
        for v in buf.slice_mut::<f32>().unwrap() {
            *v *= 10.0;
        }
        buf.unstage(&mut tensors, &g[0]).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&tensors[0].reshape([-1])).unwrap(),
            vec![10.0, 40.0, 20.0, 50.0, 30.0, 60.0]
        );
        assert_eq!(f32::try_from(&tensors[2]).unwrap(), 80.0);
        assert_eq!(buf.bytes().len(), 7 * 4);
        assert_eq!(&buf.bytes_mut()[..4], &10.0f32.to_ne_bytes());
        let empty = HostBuf::zeros(Kind::Float, 0).unwrap();
        assert!(empty.bytes().is_empty());
    }

    #[test]
    fn pool_reuses_buffers_of_the_same_layout() {
        let pool = Pool::default();
        let mut a = pool.take(Kind::Float, 3).unwrap();
        assert_eq!(a.slice::<f32>().unwrap(), &[0.0; 3]);
        a.slice_mut::<f32>().unwrap()[1] = 5.0;
        pool.put(a);
        // Same layout: the kept buffer, old values and all; another layout: a new one.
        assert_eq!(pool.take(Kind::Float, 3).unwrap().slice::<f32>().unwrap(), &[0.0, 5.0, 0.0]);
        assert_eq!(pool.take(Kind::Float, 3).unwrap().slice::<f32>().unwrap(), &[0.0; 3]);
        for n in 0..6 {
            pool.put(HostBuf::zeros(Kind::Double, n).unwrap());
        }
        assert_eq!(pool.bufs.borrow().len(), Pool::KEEP);
        let t = vec![Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0, 5.0])];
        let g = groups("test", &t, |_, _| true).unwrap();
        assert_eq!(pool.stage(&t, &g[0]).unwrap().slice::<f64>().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(pool.stage(&t, &Group { kind: Kind::Double, indices: vec![0], numel: 4 }).is_err());
    }

    #[test]
    fn codes_round_trip_and_layouts_differ() {
        for code in 0..30 {
            if let Some(k) = kind_from_code(code) {
                assert_eq!(kind_code(k), code);
            }
        }
        let t = vec![Tensor::zeros([2, 3], (Kind::Float, Device::Cpu))];
        let u = vec![Tensor::zeros([3, 2], (Kind::Float, Device::Cpu))];
        let l = layout("x", 0, &t, false).unwrap();
        assert_eq!(l[1..], [1, 6]);
        assert_ne!(l[0], layout("x", 0, &u, false).unwrap()[0]);
        assert_ne!(l[0], layout("x", 1, &t, false).unwrap()[0]);
        assert_eq!(l, layout("x", 0, &t, false).unwrap());
    }
}
