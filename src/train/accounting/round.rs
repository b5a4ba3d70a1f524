//! Python's `round(x, digits)` on floats: the exact binary value rounded
//! half to even at `digits` decimals, read back as the nearest float.
//! transformers 4.38 rounds the logged `loss` (4) and `epoch` (2) this way.

/// `round(x, digits)` as Python computes it.
pub fn python_round(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    // Rust's fixed-precision formatting is exact and rounds ties to even,
    // which is CPython's `double_round` (correctly rounded `dtoa`).
    format!("{x:.digits$}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_even_on_the_exact_binary_value() {
        // Python: round(0.125, 2) == 0.12, round(0.375, 2) == 0.38,
        // round(2.675, 2) == 2.67 (2.675 is 2.67499999... in binary).
        assert_eq!(python_round(0.125, 2), 0.12);
        assert_eq!(python_round(0.375, 2), 0.38);
        assert_eq!(python_round(2.675, 2), 2.67);
        assert_eq!(python_round(16.0 / 17.0 + 1.0, 2), 1.94);
        assert_eq!(python_round(7.495_108_127_593_994, 4), 7.4951);
        assert!(python_round(f64::NAN, 4).is_nan());
    }
}
