//! Exact numbers from JSON text: integers of 8 to 256 bits and `Decimal(P, S)`, read from
//! the number's own digits (never through a float), so `0.1` scaled by 10 is exactly 1 and
//! a 30-digit `Int128` keeps every digit.

/// A number's text as exact parts: sign, the digits without leading zeros, and the power of
/// ten they are scaled by (`12.5` is `125` × 10^-1).
struct Parts {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

/// Reads `-12.50e3`-style text (JSON's number grammar, and the same in a string).
fn parts(text: &str) -> Option<Parts> {
    let text = text.trim();
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let all = int.bytes().chain(frac.bytes());
    let mut digits = Vec::with_capacity(int.len() + frac.len());
    for c in all {
        if !c.is_ascii_digit() {
            return None;
        }
        if digits.is_empty() && c == b'0' {
            continue;
        }
        digits.push(c - b'0');
    }
    // Clamped: far past any type's range either way, and no hostile exponent makes the
    // scaling long.
    let exponent = exponent.clamp(-1000, 1000) - frac.len() as i64;
    Some(Parts {
        negative,
        digits,
        exponent,
    })
}

/// Why a number does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// Not a number at all.
    NotANumber,
    /// Has digits below the last allowed place (a fraction for an integer type, more than
    /// `S` decimals for a `Decimal`).
    TooPrecise,
    /// Too large for the type.
    OutOfRange,
}

/// `text` × 10^`scale` as an exact integer: sign and decimal digits (no leading zeros).
fn scaled(text: &str, scale: i64) -> Result<(bool, Vec<u8>), NumberError> {
    let Parts {
        negative,
        mut digits,
        exponent,
    } = parts(text).ok_or(NumberError::NotANumber)?;
    let exponent = exponent + scale;
    if exponent >= 0 {
        if !digits.is_empty() {
            if digits.len() as i64 + exponent > 80 {
                return Err(NumberError::OutOfRange);
            }
            digits.extend(std::iter::repeat_n(0, exponent as usize));
        }
    } else {
        let cut = digits
            .len()
            .saturating_sub(exponent.unsigned_abs() as usize);
        if digits[cut..].iter().any(|&d| d != 0) {
            return Err(NumberError::TooPrecise);
        }
        digits.truncate(cut);
    }
    Ok((negative && !digits.is_empty(), digits))
}

/// A 256-bit unsigned magnitude, little-endian 64-bit limbs.
type Limbs = [u64; 4];

fn magnitude(digits: &[u8]) -> Option<Limbs> {
    let mut n: Limbs = [0; 4];
    for &d in digits {
        let mut carry = u128::from(d);
        for limb in &mut n {
            let v = u128::from(*limb) * 10 + carry;
            *limb = v as u64;
            carry = v >> 64;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(n)
}

fn bit_length(n: &Limbs) -> u32 {
    for i in (0..4).rev() {
        if n[i] != 0 {
            return 64 * i as u32 + 64 - n[i].leading_zeros();
        }
    }
    0
}

fn is_power_of_two(n: &Limbs, bits: u32) -> bool {
    bit_length(n) == bits + 1 && n.iter().map(|l| l.count_ones()).sum::<u32>() == 1
}

/// The little-endian two's complement bytes (`bits / 8` of them) of an integer given as
/// sign and digits; `signed` types allow -2^(bits-1) .. 2^(bits-1) - 1, unsigned 0 .. 2^bits - 1.
fn to_bytes(negative: bool, digits: &[u8], bits: u32, signed: bool) -> Option<Vec<u8>> {
    let n = magnitude(digits)?;
    let fits = match (signed, negative) {
        (false, true) => false,
        (false, false) => bit_length(&n) <= bits,
        (true, false) => bit_length(&n) < bits,
        (true, true) => bit_length(&n) < bits || is_power_of_two(&n, bits - 1),
    };
    if !fits {
        return None;
    }
    let mut limbs = n;
    if negative {
        let mut carry = true;
        for limb in &mut limbs {
            let (v, c) = (!*limb).overflowing_add(u64::from(carry));
            *limb = v;
            carry = c;
        }
    }
    let bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    Some(bytes[..bits as usize / 8].to_vec())
}

/// An integer type's value from JSON number text (or the same in a string); `5.0` and
/// `1e3` are integers, `5.5` is not.
pub fn integer(text: &str, bits: u16, signed: bool) -> Result<Vec<u8>, NumberError> {
    // Plain integers of up to 64 bits, the usual case, without the digit-by-digit path.
    if bits <= 64
        && let Ok(value) = text.trim().parse::<i128>()
    {
        let (min, max) = match signed {
            true => (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1),
            false => (0, (1i128 << bits) - 1),
        };
        if !(min..=max).contains(&value) {
            return Err(NumberError::OutOfRange);
        }
        return Ok(value.to_le_bytes()[..usize::from(bits) / 8].to_vec());
    }
    let (negative, digits) = scaled(text, 0)?;
    to_bytes(negative, &digits, u32::from(bits), signed).ok_or(NumberError::OutOfRange)
}

/// A `Decimal(precision, scale)` value: the number × 10^scale, exactly, at most `precision`
/// digits, as the signed integer of `width` bytes the type stores.
pub fn decimal(text: &str, precision: u8, scale: u8, width: usize) -> Result<Vec<u8>, NumberError> {
    let (negative, digits) = scaled(text, i64::from(scale))?;
    if digits.len() > usize::from(precision) {
        return Err(NumberError::OutOfRange);
    }
    to_bytes(negative, &digits, width as u32 * 8, true).ok_or(NumberError::OutOfRange)
}

/// Reads little-endian two's complement bytes back as decimal text (`signed` or not), with
/// `scale` digits after the point: for the quarantine's JSON and the tests.
pub fn to_text(bytes: &[u8], signed: bool, scale: u8) -> String {
    let mut limbs: Limbs = [0; 4];
    for (i, chunk) in bytes.chunks(8).enumerate().take(4) {
        let mut buf = [0u8; 8];
        buf[..chunk.len()].copy_from_slice(chunk);
        limbs[i] = u64::from_le_bytes(buf);
    }
    let bits = bytes.len() * 8;
    let negative = signed && bits > 0 && bytes[bytes.len() - 1] & 0x80 != 0;
    if negative {
        // Sign-extend to 256 bits, then negate.
        for (i, limb) in limbs.iter_mut().enumerate() {
            if i * 64 >= bits {
                *limb = u64::MAX;
            } else if (i + 1) * 64 > bits {
                *limb |= u64::MAX << (bits - i * 64);
            }
        }
        let mut carry = true;
        for limb in &mut limbs {
            let (v, c) = (!*limb).overflowing_add(u64::from(carry));
            *limb = v;
            carry = c;
        }
    }
    let mut digits = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut rem = 0u128;
        for limb in limbs.iter_mut().rev() {
            let v = (rem << 64) | u128::from(*limb);
            *limb = (v / 10) as u64;
            rem = v % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    while digits.len() <= usize::from(scale) {
        digits.push(b'0');
    }
    digits.reverse();
    let mut text = String::new();
    if negative {
        text.push('-');
    }
    let point = digits.len() - usize::from(scale);
    text.push_str(std::str::from_utf8(&digits[..point]).unwrap_or("0"));
    if scale > 0 {
        text.push('.');
        text.push_str(std::str::from_utf8(&digits[point..]).unwrap_or(""));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_exact_and_range_checked() {
        assert_eq!(integer("255", 8, false), Ok(vec![255]));
        assert_eq!(integer("256", 8, false), Err(NumberError::OutOfRange));
        assert_eq!(integer("-1", 8, false), Err(NumberError::OutOfRange));
        assert_eq!(integer("-128", 8, true), Ok(vec![0x80]));
        assert_eq!(integer("-129", 8, true), Err(NumberError::OutOfRange));
        assert_eq!(integer("127", 8, true), Ok(vec![127]));
        assert_eq!(integer("128", 8, true), Err(NumberError::OutOfRange));
        assert_eq!(integer("5.0", 32, true), Ok(5i32.to_le_bytes().to_vec()));
        assert_eq!(
            integer("1e3", 16, false),
            Ok(1000u16.to_le_bytes().to_vec())
        );
        assert_eq!(integer("5.5", 32, true), Err(NumberError::TooPrecise));
        assert_eq!(integer("x", 32, true), Err(NumberError::NotANumber));
        assert_eq!(integer("-0", 8, false), Ok(vec![0]));
        let max = u128::MAX.to_string();
        assert_eq!(
            integer(&max, 128, false),
            Ok(u128::MAX.to_le_bytes().to_vec())
        );
        let min = i128::MIN.to_string();
        assert_eq!(
            integer(&min, 128, true),
            Ok(i128::MIN.to_le_bytes().to_vec())
        );
        let two_256 =
            "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(integer(two_256, 256, false), Err(NumberError::OutOfRange));
        let max_256 =
            "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(integer(max_256, 256, false), Ok(vec![0xff; 32]));
        assert_eq!(integer("1e999999", 64, false), Err(NumberError::OutOfRange));
    }

    #[test]
    fn decimals_scale_exactly() {
        assert_eq!(decimal("12.5", 9, 2, 4), Ok(1250i32.to_le_bytes().to_vec()));
        assert_eq!(decimal("0.1", 9, 1, 4), Ok(1i32.to_le_bytes().to_vec()));
        assert_eq!(
            decimal("-0.0001", 18, 4, 8),
            Ok((-1i64).to_le_bytes().to_vec())
        );
        assert_eq!(decimal("0.00001", 18, 4, 8), Err(NumberError::TooPrecise));
        assert_eq!(
            decimal("12345678901234.5678", 18, 4, 8).map(|b| b.len()),
            Ok(8)
        );
        assert_eq!(
            decimal("123456789012345.678", 18, 4, 8),
            Err(NumberError::OutOfRange)
        );
    }

    #[test]
    fn bytes_read_back_as_text() {
        assert_eq!(to_text(&1250i32.to_le_bytes(), true, 2), "12.50");
        assert_eq!(to_text(&(-1i64).to_le_bytes(), true, 4), "-0.0001");
        assert_eq!(
            to_text(&i128::MIN.to_le_bytes(), true, 0),
            i128::MIN.to_string()
        );
        assert_eq!(
            to_text(&u64::MAX.to_le_bytes(), false, 0),
            u64::MAX.to_string()
        );
        assert_eq!(to_text(&[0; 32], true, 0), "0");
    }
}
