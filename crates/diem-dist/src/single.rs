//! [`Single`]: the one-process back end, where every collective is the identity.

use tch::Tensor;

use crate::{Backend, Communicator, DistError, Result};

/// One process: rank 0 of 1. Collectives return at once and leave their tensors unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Communicator for Single {
    fn backend(&self) -> Backend {
        Backend::Single
    }

    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn local_rank(&self) -> usize {
        0
    }

    fn broadcast(&self, _tensors: &mut [Tensor], root: usize) -> Result<()> {
        check_root(root)
    }

    fn all_reduce_mean(&self, tensors: &mut [Tensor]) -> Result<()> {
        for (index, t) in tensors.iter().enumerate() {
            if !t.is_floating_point() {
                return Err(DistError::Tensor {
                    op: "all_reduce_mean",
                    index,
                    reason: format!("a mean needs a floating-point tensor, got {:?}", t.kind()),
                });
            }
        }
        Ok(())
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![bytes.to_vec()])
    }

    fn gather_rows(&self, rows: &Tensor, root: usize) -> Result<Option<Tensor>> {
        check_root(root)?;
        Ok(Some(rows.to_device(tch::Device::Cpu)))
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

fn check_root(root: usize) -> Result<()> {
    if root != 0 {
        return Err(DistError::Mpi(format!("root rank {root} does not exist in a group of 1")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{agree, check_same, Disagreement};

    #[test]
    fn single_collectives_are_identities() {
        let s = Single;
        let mut t = vec![Tensor::from_slice(&[1.0f32, 2.0])];
        s.all_reduce_mean(&mut t).unwrap();
        s.broadcast(&mut t, 0).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t[0]).unwrap(), vec![1.0, 2.0]);
        assert!(s.broadcast(&mut t, 1).is_err());
        let mut ints = vec![Tensor::from_slice(&[1i64])];
        assert!(matches!(s.all_reduce_mean(&mut ints), Err(DistError::Tensor { index: 0, .. })));
        assert_eq!(s.all_gather_f64(&[1.5, -2.0]).unwrap(), vec![vec![1.5, -2.0]]);
        let rows = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
        assert_eq!(s.gather_rows(&rows, 0).unwrap().unwrap().size(), vec![2, 2]);
        check_same(&s, "x", "y").unwrap();
    }

    #[test]
    fn agree_returns_the_local_error_on_the_failing_rank() {
        let ok: std::result::Result<u8, std::io::Error> = Ok(3);
        assert_eq!(agree(&Single, ok).unwrap(), 3);
        let bad: std::result::Result<u8, std::io::Error> = Err(std::io::Error::other("bad file x.npz"));
        match agree(&Single, bad) {
            Err(Disagreement::Local(e)) => assert!(e.to_string().contains("x.npz")),
            other => panic!("expected the local error, got {other:?}"),
        }
    }
}
