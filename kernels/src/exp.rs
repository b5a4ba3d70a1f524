//! `e^x` in single precision without libm.
//!
//! libm's `expf` is a scalar call per element and takes a slow path for
//! results that underflow, which is every masked attention score. This one
//! is branch-free, so loops over slices vectorise, and is within 2 ulp of
//! the exact value over the normal range (checked against `f64::exp`).
//!
//! The method is the classic one (Cody and Waite; Cephes' `expf`): write
//! `x = n·ln 2 + r` with integer `n` and `|r| <= ln 2 / 2`, approximate
//! `e^r` by a degree-7 polynomial, and scale by `2^n` through the exponent
//! bits.

/// Below this `e^x` is under the smallest normal `f32`: the result is 0.
const LOWEST: f32 = -87.33;
/// Above this `2^n` would leave the exponent range: the result is `inf`
/// (true overflow starts at 88.72; the sliver between is of no use to a
/// softmax or a sigmoid).
const HIGHEST: f32 = 88.0;
/// `1.5·2^23`: adding it to a float of magnitude below `2^22` rounds that
/// float to an integer, which then sits in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
/// `ln 2` split in two so that `n·LN2_HI` is exact for the `n` in range.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x`; 0 below about -87.3 and `inf` above 88.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let clamped = x.clamp(LOWEST, HIGHEST);
    let shifted = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    // Taylor-like coefficients of e^r fitted on |r| <= ln 2 / 2 (Cephes).
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_to_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let value = e_r * two_to_n;
    if x < LOWEST {
        0.0
    } else if x > HIGHEST {
        f32::INFINITY
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(got: f32, want: f64) -> f64 {
        let want32 = want as f32;
        let ulp = f64::from(f32::from_bits(want32.to_bits() + 1) - want32);
        (f64::from(got) - want).abs() / ulp
    }

    #[test]
    fn within_two_ulp_of_f64_over_the_normal_range() {
        let mut x = LOWEST + 0.01;
        let mut worst: f64 = 0.0;
        while x < HIGHEST {
            worst = worst.max(ulps(exp(x), f64::from(x).exp()));
            x += 0.000_731;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    #[test]
    fn limits() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::MIN), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }
}
