//! The settings table: each setting is declared once, and the `Config` struct, its defaults,
//! the list of variables read, `--help` and the README check are all generated from it.

/// One setting as people see it: in `--help`, `--print-config` and the README's table.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The `Config` field; the environment variable is its upper-cased name.
    pub field: &'static str,
    /// The default, as a person reads it (`CPU cores`, `disk in prod, else memory`).
    pub default: &'static str,
    /// What it does: the field's doc comment.
    pub help: &'static str,
}

impl Setting {
    /// The environment variable's name (`buffer_size` → `BUFFER_SIZE`), the rule envy uses.
    pub fn var(&self) -> String {
        self.field.to_ascii_uppercase()
    }
}

/// Declares every setting once: `/// meaning` doc lines, then
/// `field: Type = default_expression, "default as shown";`.
///
/// Generates `Config` (every field `pub`, `#[serde(default)]`, `Debug`/`Serialize` derived:
/// secrets are [`Secret`](super::Secret)s, which never print), `impl Default for Config`
/// from the same default expressions, and `SETTINGS`. A setting therefore cannot be read
/// without being listed, listed without a default, or documented with a different default.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident : $ty:ty = $default:expr, $shown:literal;
    )*) => {
        /// The whole configuration: one field per environment variable (the upper-cased
        /// field name). Declared in one table in `config/mod.rs`; see [`SETTINGS`].
        #[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
        #[serde(default)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        /// Every setting, in the order `--help` and the README list them.
        pub const SETTINGS: &[$crate::config::table::Setting] = &[
            $( $crate::config::table::Setting {
                field: stringify!($field),
                default: $shown,
                help: concat!($($doc, "\n"),+),
            }, )*
        ];
    };
}
pub(crate) use settings;

/// `event-ingest --help`: every setting with its default and meaning, from [`SETTINGS`].
///
/// [`SETTINGS`]: super::SETTINGS
pub fn help_text(settings: &[Setting]) -> String {
    let mut out = String::from(
        "event-ingest: collects analytics events over HTTP and writes them to ClickHouse.\n\n\
         Usage: event-ingest [--help | --print-config]\n\n\
         Every setting is an environment variable; none is required.\n\n",
    );
    for setting in settings {
        out.push_str(&format!(
            "{}  (default: {})\n",
            setting.var(),
            setting.default
        ));
        for line in setting.help.lines() {
            let line = line.trim();
            if !line.is_empty() {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}
