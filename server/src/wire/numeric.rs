//! `numeric` values (Arrow `Decimal128`) in PostgreSQL's text and binary wire forms, exact for
//! all 38 digits. arrow-pg goes through `rust_decimal`, whose 96-bit mantissa cannot hold
//! the larger values (`avg()` of bigints, `numeric(38, 16)`) and fails them with 22003.

/// The decimal digits of `|value| * 10^-scale`, at least `scale + 1` of them, and the number
/// of digits after the point.
fn digits(value: i128, scale: i8) -> (String, usize) {
    let mut digits = value.unsigned_abs().to_string();
    if scale < 0 && value != 0 {
        digits.push_str(&"0".repeat(scale.unsigned_abs() as usize));
    }
    let decimals = scale.max(0) as usize;
    if digits.len() <= decimals {
        digits = format!("{digits:0>width$}", width = decimals + 1);
    }
    (digits, decimals)
}

/// `value` (with `scale` decimals) as PostgreSQL prints a numeric: `-12.50`.
pub fn numeric_text(value: i128, scale: i8) -> String {
    let (digits, decimals) = digits(value, scale);
    let point = digits.len() - decimals;
    let sign = if value < 0 { "-" } else { "" };
    match decimals {
        0 => format!("{sign}{digits}"),
        _ => format!("{sign}{}.{}", &digits[..point], &digits[point..]),
    }
}

/// PostgreSQL's binary numeric: digit count, weight (of the first base-10000 digit), sign,
/// display scale, then the base-10000 digits without leading or trailing zero digits.
pub fn numeric_binary(value: i128, scale: i8) -> Vec<u8> {
    let (digits, decimals) = digits(value, scale);
    let (whole, fraction) = digits.split_at(digits.len() - decimals);
    let whole = format!("{whole:0>width$}", width = whole.len().div_ceil(4) * 4);
    let fraction = format!(
        "{fraction:0<width$}",
        width = fraction.len().div_ceil(4) * 4
    );
    let groups: Vec<i16> = whole
        .as_bytes()
        .chunks(4)
        .chain(fraction.as_bytes().chunks(4))
        .map(|chunk| chunk.iter().fold(0i16, |n, d| n * 10 + (d - b'0') as i16))
        .collect();
    let mut weight = (whole.len() / 4) as i16 - 1;
    let leading = groups.iter().take_while(|&&g| g == 0).count();
    weight -= leading as i16;
    let kept = &groups[leading..];
    let trailing = kept.iter().rev().take_while(|&&g| g == 0).count();
    let kept = &kept[..kept.len() - trailing];
    if kept.is_empty() {
        weight = 0;
    }
    let sign: u16 = if value < 0 { 0x4000 } else { 0 };
    let mut bytes = Vec::with_capacity(8 + 2 * kept.len());
    bytes.extend_from_slice(&(kept.len() as i16).to_be_bytes());
    bytes.extend_from_slice(&weight.to_be_bytes());
    bytes.extend_from_slice(&sign.to_be_bytes());
    bytes.extend_from_slice(&(decimals as i16).to_be_bytes());
    for group in kept {
        bytes.extend_from_slice(&group.to_be_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(bytes: &[u8]) -> Vec<i16> {
        bytes
            .chunks(2)
            .map(|w| i16::from_be_bytes([w[0], w[1]]))
            .collect()
    }

    #[test]
    fn text_keeps_the_scale() {
        assert_eq!(numeric_text(1250, 2), "12.50");
        assert_eq!(numeric_text(-5, 2), "-0.05");
        assert_eq!(numeric_text(0, 3), "0.000");
        assert_eq!(numeric_text(42, 0), "42");
        assert_eq!(numeric_text(42, -2), "4200");
        assert_eq!(
            numeric_text(i128::MAX, 16),
            "17014118346046923173168.7303715884105727"
        );
    }

    #[test]
    fn binary_is_base_10000_around_the_point() {
        // 123.45: digits 123 and 4500, weight 0, dscale 2.
        assert_eq!(words(&numeric_binary(12345, 2)), [2, 0, 0, 2, 123, 4500]);
        // -0.05: one digit 500 at weight -1.
        assert_eq!(words(&numeric_binary(-5, 2)), [1, -1, 0x4000, 2, 500]);
        // 10000 with 4 decimals: digit 1 at weight 1, trailing zero digits dropped.
        assert_eq!(words(&numeric_binary(100_000_000, 4)), [1, 1, 0, 4, 1]);
        assert_eq!(words(&numeric_binary(0, 2)), [0, 0, 0, 2]);
        // 24.0000000000000000 (an average).
        assert_eq!(
            words(&numeric_binary(24 * 10_i128.pow(16), 16)),
            [1, 0, 0, 16, 24]
        );
    }
}
