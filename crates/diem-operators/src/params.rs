//! Operator (de)serialization: a kind string plus named arrays.
//!
//! The kind grammar is `kind := name | name "[" kind ("," kind)* "]"`, e.g. `"mask"` or
//! `"compose[blur,downsample]"`. A leaf's arrays are stored under their own names (`mask`, `x_shape`);
//! the `i`-th child of a composite stores its arrays under `"{i}."` + name, recursively
//! (`"0.kernels"`, `"1.rows"`).

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use crate::blur::Blur;
use crate::compose::{Compose, Stack};
use crate::downsample::Downsample;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::kspace::KSpace;
use crate::mask::Mask;
use crate::operator::LinearOperator;
use crate::projection::Projection;
use crate::registry::{OperatorLoader, BUILTIN_KINDS};

/// A view of the named parameter arrays of one operator (the arrays under a name prefix).
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    arrays: &'a BTreeMap<String, Tensor>,
    prefix: &'a str,
}

impl<'a> Params<'a> {
    /// The arrays of the top-level operator.
    pub fn new(arrays: &'a BTreeMap<String, Tensor>) -> Self {
        Self { arrays, prefix: "" }
    }

    /// The full field name of `name` under this view's prefix.
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn get(&self, name: &str) -> Result<&'a Tensor> {
        let full = self.name(name);
        self.arrays.get(&full).ok_or(Error::MissingField { field: full })
    }

    /// Whether the array `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.arrays.contains_key(&self.name(name))
    }

    /// The array `name` as stored, of any dtype and shape (for a custom operator whose arrays the typed
    /// accessors below do not cover; validating it is the caller's job).
    ///
    /// # Errors
    /// [`Error::MissingField`] naming the full field.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        Ok(self.get(name)?.shallow_clone())
    }

    /// A float32/float64 array with finite entries.
    ///
    /// # Errors
    /// [`Error::MissingField`] or [`Error::Field`] naming the full field.
    pub fn float(&self, name: &str) -> Result<Tensor> {
        let t = self.get(name)?;
        if !matches!(t.kind(), Kind::Float | Kind::Double) {
            return Err(Error::field(
                self.name(name),
                format!("expected float32 or float64, found {}", crate::io::dtype_name(t.kind())),
            ));
        }
        if t.numel() > 0 && t.isfinite().all().int64_value(&[]) == 0 {
            return Err(Error::field(self.name(name), "contains NaN or infinite entries"));
        }
        Ok(t.shallow_clone())
    }

    /// A 1-D int64 array of positive dimensions (at most [`crate::operator::MAX_NUMEL`] entries in all).
    ///
    /// # Errors
    /// [`Error::MissingField`] or [`Error::Field`] naming the full field.
    pub fn shape(&self, name: &str) -> Result<Vec<i64>> {
        let t = self.get(name)?;
        if t.kind() != Kind::Int64 || t.dim() != 1 {
            return Err(Error::field(
                self.name(name),
                format!(
                    "expected a 1-D int64 array, found {} of shape {:?}",
                    crate::io::dtype_name(t.kind()),
                    t.size()
                ),
            ));
        }
        let v = Vec::<i64>::try_from(t)?;
        if v.is_empty() || v.iter().any(|&d| d < 1) {
            return Err(Error::field(self.name(name), format!("expected positive dimensions, found {v:?}")));
        }
        if crate::operator::checked_numel(&v).is_none() {
            return Err(Error::field(
                self.name(name),
                format!("{v:?} has more than {} entries per sample", crate::operator::MAX_NUMEL),
            ));
        }
        Ok(v)
    }

    /// A single int64 (0-d or one-element array).
    ///
    /// # Errors
    /// [`Error::MissingField`] or [`Error::Field`] naming the full field.
    pub fn int(&self, name: &str) -> Result<i64> {
        let t = self.get(name)?;
        if t.kind() != Kind::Int64 || t.numel() != 1 {
            return Err(Error::field(
                self.name(name),
                format!(
                    "expected one int64, found {} of shape {:?}",
                    crate::io::dtype_name(t.kind()),
                    t.size()
                ),
            ));
        }
        Ok(t.reshape([1]).int64_value(&[0]))
    }
}

/// A parsed kind string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KindTree {
    name: String,
    children: Vec<KindTree>,
}

fn parse_kind(s: &str) -> Option<KindTree> {
    fn node(s: &[u8], pos: &mut usize) -> Option<KindTree> {
        let start = *pos;
        while *pos < s.len() && (s[*pos].is_ascii_alphanumeric() || s[*pos] == b'_') {
            *pos += 1;
        }
        if *pos == start {
            return None;
        }
        let name = String::from_utf8(s[start..*pos].to_vec()).ok()?;
        let mut children = Vec::new();
        if *pos < s.len() && s[*pos] == b'[' {
            *pos += 1;
            loop {
                children.push(node(s, pos)?);
                match s.get(*pos) {
                    Some(b',') => *pos += 1,
                    Some(b']') => {
                        *pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        Some(KindTree { name, children })
    }
    // No trimming: " mask" or "mask\n" is not the kind "mask" (the error shows the string as found).
    let bytes = s.as_bytes();
    let mut pos = 0;
    let tree = node(bytes, &mut pos)?;
    (pos == bytes.len()).then_some(tree)
}

/// Rebuilds an operator from its kind string and named arrays (the inverse of
/// [`LinearOperator::kind`] + [`LinearOperator::params`]). Every array is validated (dtype, shape,
/// finiteness); errors name the field. Leaves of the kind are the built-in kinds first, then the kinds
/// registered in this process with [`crate::register_operator`].
///
/// # Errors
/// [`Error::UnknownKind`] for a kind string that does not parse or names no built-in or registered
/// operator; the loader's error (a missing or bad field) otherwise.
pub fn operator_from_params(
    kind: &str,
    arrays: &BTreeMap<String, Tensor>,
) -> Result<Box<dyn LinearOperator>> {
    operator_from_params_with(kind, arrays, &crate::registry::global_loader)
}

/// [`operator_from_params`] with `lookup` giving the loaders of non-built-in leaf kinds.
pub(crate) fn operator_from_params_with(
    kind: &str,
    arrays: &BTreeMap<String, Tensor>,
    lookup: &dyn Fn(&str) -> Option<OperatorLoader>,
) -> Result<Box<dyn LinearOperator>> {
    let tree = parse_kind(kind).ok_or_else(|| Error::UnknownKind { kind: kind.to_string() })?;
    build(&tree, kind, arrays, "", lookup)
}

/// Checks that `kind` can be written to an observation file and read back in this process: it parses, and
/// every leaf is a built-in kind or has a loader from `lookup`.
///
/// # Errors
/// [`Error::NotPersistable`] saying which part is missing.
pub(crate) fn check_persistable(kind: &str, lookup: &dyn Fn(&str) -> Option<OperatorLoader>) -> Result<()> {
    let refuse = |reason: String| Err(Error::NotPersistable { kind: kind.to_string(), reason });
    let Some(tree) = parse_kind(kind) else {
        return refuse(
            "its kind is not a kind string (an FnOperator holds a closure, and an operator that keeps the \
             default `kind()`, its Rust type name, has no persistence)"
                .into(),
        );
    };
    fn unknown_leaf<'t>(t: &'t KindTree, lookup: &dyn Fn(&str) -> Option<OperatorLoader>) -> Option<&'t str> {
        let composite = matches!(t.name.as_str(), "compose" | "stack");
        if t.children.is_empty() {
            let builtin = BUILTIN_KINDS.contains(&t.name.as_str()) && !composite;
            return (!builtin && lookup(&t.name).is_none()).then_some(t.name.as_str());
        }
        if !composite {
            return Some(t.name.as_str());
        }
        t.children.iter().find_map(|c| unknown_leaf(c, lookup))
    }
    match unknown_leaf(&tree, lookup) {
        Some(leaf) => refuse(format!(
            "no loader for kind {leaf:?} is registered in this process, so the file could not be read back"
        )),
        None => Ok(()),
    }
}

fn build(
    tree: &KindTree,
    full_kind: &str,
    arrays: &BTreeMap<String, Tensor>,
    prefix: &str,
    lookup: &dyn Fn(&str) -> Option<OperatorLoader>,
) -> Result<Box<dyn LinearOperator>> {
    let p = Params { arrays, prefix };
    let leaf = tree.children.is_empty();
    let unknown = || Error::UnknownKind { kind: full_kind.to_string() };
    Ok(match (tree.name.as_str(), leaf) {
        ("identity", true) => Box::new(Identity::from_params(&p)?),
        ("mask", true) => Box::new(Mask::from_params(&p)?),
        ("projection", true) => Box::new(Projection::from_params(&p)?),
        ("kspace", true) => Box::new(KSpace::from_params(&p)?),
        ("blur", true) => Box::new(Blur::from_params(&p)?),
        ("downsample", true) => Box::new(Downsample::from_params(&p)?),
        ("compose", false) | ("stack", false) => {
            let mut ops = Vec::with_capacity(tree.children.len());
            for (i, child) in tree.children.iter().enumerate() {
                ops.push(build(child, full_kind, arrays, &format!("{prefix}{i}."), lookup)?);
            }
            if tree.name == "compose" {
                Box::new(Compose::new(ops)?)
            } else {
                Box::new(Stack::new(ops)?)
            }
        }
        (name, true) if !BUILTIN_KINDS.contains(&name) => match lookup(name) {
            Some(loader) => loader(&p)?,
            None => return Err(unknown()),
        },
        _ => return Err(unknown()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_grammar() {
        let t = parse_kind("compose[blur,stack[mask,identity]]").expect("parses");
        assert_eq!(t.name, "compose");
        assert_eq!(t.children.len(), 2);
        assert_eq!(t.children[1].children[1].name, "identity");
        for bad in ["", "compose[", "compose[]", "mask]", "a[b,,c]", "mask x", " mask", "mask\n", "mask "] {
            assert!(parse_kind(bad).is_none(), "{bad:?} should not parse");
        }
    }
}
