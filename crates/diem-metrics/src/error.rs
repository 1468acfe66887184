//! The error type of diem-metrics.

/// What can go wrong when computing a metric.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// An input tensor has the wrong number of dimensions or mismatched sizes.
    #[error("{metric}: {what}")]
    Shape {
        /// The metric being computed.
        metric: &'static str,
        /// What was expected and what was given.
        what: String,
    },
    /// A configuration value is out of its valid range.
    #[error("{metric}: invalid parameter {name} = {value}: {expected}")]
    Parameter {
        /// The metric being computed.
        metric: &'static str,
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What is accepted.
        expected: &'static str,
    },
    /// An input holds NaN or infinite values.
    #[error("{metric}: input {input} holds non-finite values")]
    NonFinite {
        /// The metric being computed.
        metric: &'static str,
        /// Which input.
        input: &'static str,
    },
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

/// Checks that a tensor is `[n, d]` with n ≥ 1 and finite entries.
pub(crate) fn check_points(metric: &'static str, input: &'static str, t: &tch::Tensor) -> Result<(i64, i64)> {
    let size = t.size();
    let &[n, d] = size.as_slice() else {
        return Err(MetricsError::Shape { metric, what: format!("{input} must be [n, d], got {size:?}") });
    };
    if n < 1 || d < 1 {
        return Err(MetricsError::Shape { metric, what: format!("{input} must be non-empty, got {size:?}") });
    }
    if !bool::try_from(t.f_isfinite()?.f_all()?)? {
        return Err(MetricsError::NonFinite { metric, input });
    }
    Ok((n, d))
}
