//! Sharding expressions: which forms of a `Distributed` table's sharding key the gateway
//! evaluates, and where the key sits in rows of a column list ([`KeyPlan`]).

use super::ColumnType;

/// A sharding expression this service can evaluate, as read from a `Distributed` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardingKey {
    expression: String,
    column: String,
    form: Form,
}

/// The forms of [`ShardingKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `cityHash64(toString(col))`.
    HashOfText,
    /// `cityHash64(col)`.
    Hash,
    /// `col`.
    Plain,
}

impl ShardingKey {
    /// Reads `expression` as `system.tables.engine_full` spells the fourth argument of
    /// `Distributed(...)`; `Err` names it when it is not one of the forms evaluated here.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let text: String = expression.chars().filter(|c| !c.is_whitespace()).collect();
        let call = |name: &str, text: &str| -> Option<String> {
            let inner = text
                .strip_prefix(name)?
                .strip_prefix('(')?
                .strip_suffix(')')?;
            Some(inner.to_string())
        };
        let (form, column) = if let Some(inner) = call("cityHash64", &text) {
            match call("toString", &inner) {
                Some(column) => (Form::HashOfText, column),
                None => (Form::Hash, inner),
            }
        } else {
            (Form::Plain, text)
        };
        let column = identifier(&column).ok_or_else(|| {
            format!(
                "sharding expression {expression} is not one this service evaluates \
                 (cityHash64(toString(<column>)), cityHash64(<column>), or an unsigned \
                 integer <column>)"
            )
        })?;
        Ok(Self {
            expression: expression.trim().to_string(),
            column,
            form,
        })
    }

    /// `cityHash64(toString(<column>))`: the events table's expression.
    pub fn text_hash(column: &str) -> Self {
        Self {
            expression: format!("cityHash64(toString({column}))"),
            column: column.to_string(),
            form: Form::HashOfText,
        }
    }

    /// The expression, as read (without the modulo).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The column it reads.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// How to find and evaluate the key in rows encoded under `columns` (`(name, type)` in
    /// encoding order; `with_defaults`: `RowBinaryWithDefaults` rows, a flag byte before
    /// each value). `Err` says why not: no such column, or a type this form is not
    /// evaluated for.
    pub fn plan(
        &self,
        columns: &[(String, String)],
        with_defaults: bool,
    ) -> Result<KeyPlan, String> {
        let at = columns
            .iter()
            .position(|(name, _)| *name == self.column)
            .ok_or_else(|| {
                format!(
                    "sharding expression {} reads column {}, which is not among the columns \
                     written",
                    self.expression, self.column
                )
            })?;
        let before = columns[..at]
            .iter()
            .map(|(_, ty)| ColumnType::parse(ty).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let ty = columns[at].1.trim();
        let unsupported = || {
            format!(
                "sharding expression {} over column {} {ty} is not one this service evaluates",
                self.expression, self.column
            )
        };
        let kind = Kind::of(ty).ok_or_else(unsupported)?;
        let fits = match (self.form, kind) {
            (Form::HashOfText, _) => true,
            (Form::Hash, Kind::Uuid) => false,
            (Form::Hash, _) => true,
            (Form::Plain, Kind::UInt(_)) => true,
            (Form::Plain, _) => false,
        };
        if !fits {
            return Err(unsupported());
        }
        Ok(KeyPlan {
            before,
            kind,
            form: self.form,
            with_defaults,
        })
    }
}

/// A plain column name (backquotes allowed), or `None`.
fn identifier(text: &str) -> Option<String> {
    let name = match text.strip_prefix('`') {
        Some(rest) => rest.strip_suffix('`')?,
        None => text,
    };
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then(|| name.to_string())
}

/// The key column's type, as far as evaluating the expression cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `String` (or `LowCardinality(String)`).
    String,
    /// `FixedString(N)`.
    FixedString(usize),
    /// `UInt8`..`UInt64`, by width.
    UInt(usize),
    /// `Int8`..`Int64`, by width.
    Int(usize),
    /// `UUID`.
    Uuid,
}

impl Kind {
    fn of(ty: &str) -> Option<Self> {
        // Hashed over its values, as the events table's repetitive names always were.
        let ty = ty
            .strip_prefix("LowCardinality(")
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or(ty);
        Some(match ty {
            "String" => Self::String,
            "UInt8" => Self::UInt(1),
            "UInt16" => Self::UInt(2),
            "UInt32" => Self::UInt(4),
            "UInt64" => Self::UInt(8),
            "Int8" => Self::Int(1),
            "Int16" => Self::Int(2),
            "Int32" => Self::Int(4),
            "Int64" => Self::Int(8),
            "UUID" => Self::Uuid,
            _ => {
                let n = ty.strip_prefix("FixedString(")?.strip_suffix(')')?;
                Self::FixedString(n.trim().parse().ok()?)
            }
        })
    }
}

/// Where the key sits in rows of one column list, and how it is evaluated.
#[derive(Debug, Clone)]
pub struct KeyPlan {
    before: Vec<ColumnType>,
    kind: Kind,
    form: Form,
    with_defaults: bool,
}

impl KeyPlan {
    /// The expression's value (before the modulo) for one row's values (no tag). `None`:
    /// not a row of this list, or (`RowBinaryWithDefaults`) a key left to the server's
    /// default, which the gateway cannot know.
    pub fn value(&self, row: &[u8]) -> Option<u64> {
        let mut at = 0usize;
        for ty in &self.before {
            if self.with_defaults {
                let flag = *row.get(at)?;
                at += 1;
                if flag == 1 {
                    continue;
                }
            }
            at = at.checked_add(ty.value_len(row.get(at..)?)?)?;
        }
        if self.with_defaults {
            if *row.get(at)? != 0 {
                return None;
            }
            at += 1;
        }
        let value = row.get(at..)?;
        let fixed = |width: usize| -> Option<u64> {
            let mut bytes = [0u8; 8];
            bytes[..width].copy_from_slice(value.get(..width)?);
            Some(u64::from_le_bytes(bytes))
        };
        let city = ch_cityhash102::cityhash64;
        match (self.form, self.kind) {
            (Form::Plain, Kind::UInt(w)) => fixed(w),
            (Form::Plain, _) => None,
            (_, Kind::String) => {
                let (len, prefix) = super::leb128(value)?;
                Some(city(value.get(prefix..prefix.checked_add(len)?)?))
            }
            (Form::Hash, Kind::FixedString(n)) => Some(city(value.get(..n)?)),
            (Form::HashOfText, Kind::FixedString(n)) => {
                let bytes = value.get(..n)?;
                let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                Some(city(&bytes[..end]))
            }
            // Zero-extended, whatever the sign: the server's `bit_cast` to UInt64.
            (Form::Hash, Kind::UInt(w) | Kind::Int(w)) => Some(int_hash64(fixed(w)?)),
            (Form::Hash, _) => None,
            (Form::HashOfText, Kind::UInt(w)) => Some(city(fixed(w)?.to_string().as_bytes())),
            (Form::HashOfText, Kind::Int(w)) => {
                let bits = fixed(w)?;
                let shift = 64 - 8 * w as u32;
                let signed = ((bits << shift) as i64) >> shift;
                Some(city(signed.to_string().as_bytes()))
            }
            (Form::HashOfText, Kind::Uuid) => {
                let high = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
                let low = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
                let mut text = [0u8; 36];
                let text = uuid::Uuid::from_u64_pair(high, low)
                    .hyphenated()
                    .encode_lower(&mut text);
                Some(city(text.as_bytes()))
            }
        }
    }
}

/// ClickHouse's `intHash64` (`IntHash64Impl`: a constant mixed in, then the 64-bit Murmur
/// finaliser), what `cityHash64` of a number is.
fn int_hash64(x: u64) -> u64 {
    let mut x = x ^ 0x4cf2_d2ba_ae6d_a887;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// How a lane's sharder finds the key of one of its rows: the events table's rows have one
/// column list; a read table's rows carry the tag of theirs.
pub trait RowKeys: Send + Sync {
    /// The sharding expression's value for `row`, or `None` when it cannot be evaluated.
    fn value(&self, row: &[u8]) -> Option<u64>;
}

impl RowKeys for KeyPlan {
    fn value(&self, row: &[u8]) -> Option<u64> {
        KeyPlan::value(self, row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cityHash64` values ClickHouse 18.16 gave for these strings (docs/cluster.md).
    #[test]
    fn the_hash_is_clickhouses_cityhash64() {
        for (text, expected) in [
            ("", 11_160_318_154_034_397_263u64),
            ("a", 2_603_192_927_274_642_682),
            ("abc", 4_220_206_313_085_259_313),
            ("dev-1", 2_965_553_883_061_279_387),
            (
                "61f0c404-5cb3-11e7-907b-a6006ad3dba0",
                3_613_831_417_417_701_967,
            ),
            ("ünïcødé ✓ 设备", 8_586_406_237_927_328_668),
            (&"x".repeat(17), 14_762_337_010_942_834_261),
            (&"0123456789".repeat(7), 7_040_186_705_704_256_002),
            (&"ab".repeat(100), 12_782_225_866_474_870_722),
        ] {
            assert_eq!(
                ch_cityhash102::cityhash64(text.as_bytes()),
                expected,
                "{text:?}"
            );
        }
    }

    fn put_string(out: &mut Vec<u8>, s: &[u8]) {
        crate::format::put_leb128(out, s.len());
        out.extend_from_slice(s);
    }

    /// The value of `expression` over one row `pad String, k <ty>` holding `value` (its
    /// RowBinary bytes), as the gateway computes it.
    fn value_of(expression: &str, ty: &str, value: &[u8]) -> Result<u64, String> {
        let columns = vec![
            ("pad".to_string(), "String".to_string()),
            ("k".to_string(), ty.to_string()),
        ];
        let plan = ShardingKey::parse(expression)?.plan(&columns, false)?;
        let mut row = Vec::new();
        put_string(&mut row, b"before the key");
        row.extend_from_slice(value);
        plan.value(&row).ok_or_else(|| "no value".to_string())
    }

    fn string(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, s.as_bytes());
        out
    }

    /// Each supported expression and key type against what ClickHouse 18.16 answered for
    /// the same value (`SELECT cityHash64(toString(toInt8(-128))), ...`).
    #[test]
    fn each_expression_matches_the_servers_values() {
        let text = "cityHash64(toString(k))";
        let uuid = uuid::Uuid::parse_str("61f0c404-5cb3-11e7-907b-a6006ad3dba0").unwrap();
        let (high, low) = uuid.as_u64_pair();
        let uuid_bytes = [high.to_le_bytes(), low.to_le_bytes()].concat();
        let cases: Vec<(&str, &str, Vec<u8>, u64)> = vec![
            // cityHash64(toString(k))
            (text, "UInt8", vec![255], 1_628_758_030_544_227_475),
            (
                text,
                "UInt64",
                u64::MAX.to_le_bytes().to_vec(),
                7_887_367_108_561_712_643,
            ),
            (
                text,
                "Int8",
                (-128i8).to_le_bytes().to_vec(),
                8_066_458_173_782_419_501,
            ),
            (
                text,
                "Int64",
                i64::MIN.to_le_bytes().to_vec(),
                15_897_920_141_151_212_888,
            ),
            (
                text,
                "Int32",
                (-5i32).to_le_bytes().to_vec(),
                11_074_098_405_329_090_250,
            ),
            (text, "UUID", uuid_bytes, 3_613_831_417_417_701_967),
            (
                text,
                "FixedString(4)",
                b"ab\0\0".to_vec(),
                1_725_057_946_192_985_918,
            ),
            (
                text,
                "FixedString(3)",
                vec![0; 3],
                11_160_318_154_034_397_263,
            ),
            (
                text,
                "String",
                string("ünïcødé ✓ 设备"),
                8_586_406_237_927_328_668,
            ),
            // cityHash64(k)
            (
                "cityHash64(k)",
                "String",
                string(""),
                11_160_318_154_034_397_263,
            ),
            (
                "cityHash64(`k`)",
                "String",
                string("abc"),
                4_220_206_313_085_259_313,
            ),
            (
                "cityHash64(k)",
                "FixedString(4)",
                b"ab\0\0".to_vec(),
                17_250_913_062_071_214_179,
            ),
            (
                "cityHash64(k)",
                "UInt8",
                vec![255],
                8_055_013_221_972_926_055,
            ),
            (
                "cityHash64(k)",
                "UInt16",
                vec![255, 255],
                6_547_939_410_751_295_652,
            ),
            (
                "cityHash64(k)",
                "UInt32",
                4_000_000_000u32.to_le_bytes().to_vec(),
                17_569_984_465_525_623_843,
            ),
            (
                "cityHash64(k)",
                "UInt64",
                u64::MAX.to_le_bytes().to_vec(),
                14_600_443_904_207_254_319,
            ),
            (
                "cityHash64(k)",
                "Int8",
                (-128i8).to_le_bytes().to_vec(),
                10_573_636_647_639_147_473,
            ),
            (
                "cityHash64(k)",
                "Int16",
                (-2i16).to_le_bytes().to_vec(),
                5_877_560_787_935_003_687,
            ),
            (
                "cityHash64(k)",
                "Int32",
                (-5i32).to_le_bytes().to_vec(),
                8_954_968_404_612_619_233,
            ),
            (
                "cityHash64(k)",
                "Int64",
                (-1i64).to_le_bytes().to_vec(),
                14_600_443_904_207_254_319,
            ),
            // k
            ("k", "UInt8", vec![200], 200),
            (
                " `k` ",
                "UInt32",
                4_000_000_000u32.to_le_bytes().to_vec(),
                4_000_000_000,
            ),
            ("k", "UInt64", u64::MAX.to_le_bytes().to_vec(), u64::MAX),
        ];
        for (expression, ty, value, expected) in cases {
            assert_eq!(
                value_of(expression, ty, &value),
                Ok(expected),
                "{expression} over {ty}"
            );
        }
    }

    #[test]
    fn expressions_and_types_it_cannot_evaluate_are_named() {
        for expression in [
            "rand()",
            "intHash64(k)",
            "cityHash64(a, b)",
            "k % 3",
            "sipHash64(k)",
        ] {
            let e = ShardingKey::parse(expression).unwrap_err();
            assert!(e.contains(expression), "{e}");
        }
        for (expression, ty) in [
            ("k", "Int32"),
            ("k", "String"),
            ("cityHash64(k)", "UUID"),
            ("cityHash64(k)", "Date"),
            ("cityHash64(toString(k))", "Float64"),
            ("cityHash64(toString(k))", "DateTime"),
            ("cityHash64(toString(k))", "Date"),
            ("cityHash64(toString(k))", "Nullable(String)"),
        ] {
            let e = value_of(expression, ty, &[0; 16]).unwrap_err();
            assert!(e.contains(expression) && e.contains(ty), "{e}");
        }
        let e = value_of("cityHash64(toString(other))", "String", b"").unwrap_err();
        assert!(e.contains("other"), "{e}");
    }

    #[test]
    fn rows_with_server_defaults_skip_flagged_values() {
        let columns = vec![
            ("a".to_string(), "UInt32".to_string()),
            ("b".to_string(), "String".to_string()),
            ("k".to_string(), "String".to_string()),
        ];
        let plan = ShardingKey::parse("cityHash64(k)")
            .unwrap()
            .plan(&columns, true)
            .unwrap();
        // a: default (flag 1, no value); b: "x"; k: "abc".
        let mut row = vec![1, 0];
        put_string(&mut row, b"x");
        row.push(0);
        put_string(&mut row, b"abc");
        assert_eq!(plan.value(&row), Some(4_220_206_313_085_259_313));
        // k left to the server's default: unknown here.
        assert_eq!(plan.value(&[1, 1, 1]), None);
    }
}
