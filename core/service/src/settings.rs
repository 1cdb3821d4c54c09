//! Loading the binaries' layered TOML configuration (`jmdc-edge`, `jmdc-cloud`) through the
//! `config` crate: the main file (`/etc/jmdc/edge.toml`), then the drop-in folder next to it
//! (`/etc/jmdc/edge.d/*.toml`, in byte-wise name order), then `PREFIX__SECTION__KEY` environment
//! variables. Later layers win key by key. The merged result is deserialised into a
//! `deny_unknown_fields` struct; an error names the layer that introduced the offending key
//! (the file, or the environment variable) and the key's dotted path.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration that could not be used.
///
/// Displays as `<path>: <message>`; the message names the dotted key where one is involved.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The file the problem is in, or `environment variable NAME` when an environment override
    /// introduced it.
    pub path: PathBuf,
    /// What is wrong, naming the key (`unknown key `cloud.endpiont``).
    pub message: String,
}

impl ConfigError {
    /// An error about `path`.
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    fn env(var: &str, message: impl Into<String>) -> Self {
        Self {
            path: PathBuf::from(format!("environment variable {var}")),
            message: message.into(),
        }
    }
}

/// The drop-in folder of the configuration file `path`: `<dir>/<stem>.d` (`/etc/jmdc/edge.toml`
/// → `/etc/jmdc/edge.d`).
pub fn drop_in_dir(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or(path.as_os_str());
    let mut name = stem.to_os_string();
    name.push(".d");
    path.with_file_name(name)
}

/// The configuration files read for `path`, in the order they are applied: `path` itself, then
/// every `*.toml` in its drop-in folder ([`drop_in_dir`]) in byte-wise name order. A missing
/// drop-in folder is fine; names without the `.toml` extension and hidden names (leading `.`)
/// are ignored; a folder that cannot be listed is an error naming it.
pub fn config_layers(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut layers = vec![path.to_path_buf()];
    let dir = drop_in_dir(path);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(layers),
        Err(e) => {
            return Err(ConfigError::new(
                &dir,
                format!("cannot list drop-in folder: {e}"),
            ))
        }
    };
    let mut drop_ins = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| ConfigError::new(&dir, format!("cannot list drop-in folder: {e}")))?;
        let name = entry.file_name();
        let hidden = name.as_encoded_bytes().first() == Some(&b'.');
        if !hidden && Path::new(&name).extension() == Some(OsStr::new("toml")) {
            drop_ins.push(entry.path());
        }
    }
    // `OsStr` orders by its bytes on Unix: byte-wise name order.
    drop_ins.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    layers.extend(drop_ins);
    Ok(layers)
}

/// Reads `path` (TOML), its drop-ins and `env_prefix__SECTION__KEY` environment overrides
/// (`JMDC_EDGE__PLAN__SPLIT=6` sets `plan.split`) into `T`.
///
/// Errors name the layer (file or environment variable) and the dotted key: an unknown key, a
/// value of the wrong type or an unknown enum value is reported against the last layer that sets
/// it; a missing key against `path`; a TOML syntax error against its file, with line and column.
pub fn load_toml<T: DeserializeOwned>(path: &Path, env_prefix: &str) -> Result<T, ConfigError> {
    let env = env_overrides(env_prefix, std::env::vars_os())?;
    load_layers(path, env_prefix, &env)
}

/// One environment override: `JMDC_EDGE__PLAN__SPLIT=6` → key `plan.split`.
#[derive(Debug, Clone)]
struct EnvOverride {
    var: String,
    key: String,
    value: String,
}

/// The variables of `vars` that start with `prefix__` (case-insensitive, as the `config` crate
/// matches them), with their dotted keys.
fn env_overrides(
    prefix: &str,
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<Vec<EnvOverride>, ConfigError> {
    let pattern = format!("{prefix}__").to_lowercase();
    let mut out = Vec::new();
    for (name, value) in vars {
        let Ok(var) = name.into_string() else {
            continue;
        };
        let lower = var.to_lowercase();
        let Some(rest) = lower.strip_prefix(&pattern) else {
            continue;
        };
        let key = rest.replace("__", ".");
        if key.split('.').any(str::is_empty) {
            return Err(ConfigError::env(
                &var,
                format!("does not name a key (expected {prefix}__SECTION__KEY)"),
            ));
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError::env(&var, "value is not valid UTF-8"))?;
        out.push(EnvOverride { var, key, value });
    }
    out.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(out)
}

/// Where a value came from.
#[derive(Debug)]
enum Origin {
    File(PathBuf),
    Env(String),
}

impl Origin {
    fn error(&self, message: String) -> ConfigError {
        match self {
            Origin::File(path) => ConfigError::new(path, message),
            Origin::Env(var) => ConfigError::env(var, message),
        }
    }
}

/// One applied layer and the keys it sets.
#[derive(Debug)]
enum Layer {
    File { path: PathBuf, table: toml::Table },
    Env(EnvOverride),
}

impl Layer {
    fn origin(&self) -> Origin {
        match self {
            Layer::File { path, .. } => Origin::File(path.clone()),
            Layer::Env(e) => Origin::Env(e.var.clone()),
        }
    }

    /// Whether this layer sets the dotted key `key` (or something inside it).
    fn sets(&self, key: &[&str]) -> bool {
        match self {
            Layer::File { table, .. } => {
                let mut current = table;
                for (i, part) in key.iter().enumerate() {
                    match current.get(*part) {
                        None => return false,
                        Some(_) if i + 1 == key.len() => return true,
                        Some(toml::Value::Table(inner)) => current = inner,
                        Some(_) => return false,
                    }
                }
                false
            }
            Layer::Env(e) => {
                let mine: Vec<&str> = e.key.split('.').collect();
                mine.len() >= key.len() && mine[..key.len()] == *key
            }
        }
    }
}

/// Reads and parses one file layer; returns it with its text (for the `config` crate).
fn read_file_layer(path: &Path) -> Result<(Layer, String), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, format!("cannot read: {e}")))?;
    let table = text.parse::<toml::Table>().map_err(|e| {
        ConfigError::new(path, format!("invalid TOML: {}", e.to_string().trim_end()))
    })?;
    let layer = Layer::File {
        path: path.to_path_buf(),
        table,
    };
    Ok((layer, text))
}

fn load_layers<T: DeserializeOwned>(
    path: &Path,
    env_prefix: &str,
    env: &[EnvOverride],
) -> Result<T, ConfigError> {
    let mut layers = Vec::new();
    let mut builder = config::Config::builder();
    for file in config_layers(path)? {
        let (layer, text) = read_file_layer(&file)?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        layers.push(layer);
    }
    let mut env_map = config::Map::new();
    for e in env {
        env_map.insert(e.var.clone(), e.value.clone());
        layers.push(Layer::Env(e.clone()));
    }
    let builder = builder.add_source(
        config::Environment::with_prefix(env_prefix)
            .prefix_separator("__")
            .separator("__")
            .source(Some(env_map)),
    );
    let merged = builder
        .build()
        .map_err(|e| ConfigError::new(path, format!("cannot merge the layers: {e}")))?;
    merged
        .try_deserialize()
        .map_err(|e| attribute(&e, path, env_prefix, &layers))
}

/// What went wrong while deserialising the merged configuration.
#[derive(Debug, PartialEq)]
enum Problem {
    /// A key the schema does not have; `hint` lists the accepted ones.
    Unknown { key: String, hint: String },
    /// A required key no layer sets.
    Missing { key: String },
    /// A value that does not fit (wrong type, unknown enum value, rejected by a parser).
    Invalid { key: Option<String>, text: String },
}

fn join_key(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else if child.is_empty() {
        parent.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

fn classify(err: &config::ConfigError) -> Problem {
    match err {
        config::ConfigError::NotFound(key) => Problem::Missing { key: key.clone() },
        config::ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => Problem::Invalid {
            key: key.clone(),
            text: format!("invalid type: {unexpected}, expected {expected}"),
        },
        config::ConfigError::At { error, key, .. } => {
            let parent = key.as_deref().unwrap_or("");
            match classify(error) {
                Problem::Unknown { key, hint } => Problem::Unknown {
                    key: join_key(parent, &key),
                    hint,
                },
                Problem::Missing { key } => Problem::Missing {
                    key: join_key(parent, &key),
                },
                Problem::Invalid { key: inner, text } => Problem::Invalid {
                    key: if parent.is_empty() {
                        inner
                    } else {
                        Some(join_key(parent, inner.as_deref().unwrap_or("")))
                    },
                    text,
                },
            }
        }
        config::ConfigError::Message(text) => match unknown_field(text) {
            Some((field, hint)) => Problem::Unknown {
                key: field.to_owned(),
                hint: hint.to_owned(),
            },
            None => Problem::Invalid {
                key: None,
                text: text.clone(),
            },
        },
        other => Problem::Invalid {
            key: None,
            text: other.to_string(),
        },
    }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into (`x`, "expected one of …").
fn unknown_field(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    let hint = rest[end + 1..].trim_start_matches(',').trim();
    Some((&rest[..end], hint))
}

/// The key's segments without array indices (`a.b[0]` → `a`, `b`).
fn key_parts(key: &str) -> Vec<&str> {
    key.split('.')
        .map(|p| p.split('[').next().unwrap_or(p))
        .filter(|p| !p.is_empty())
        .collect()
}

/// The last layer that sets `key`, else the last one that sets its longest set ancestor.
fn origin_of<'a>(key: &str, layers: &'a [Layer]) -> Option<&'a Layer> {
    let parts = key_parts(key);
    (1..=parts.len())
        .rev()
        .find_map(|n| layers.iter().rev().find(|l| l.sets(&parts[..n])))
}

fn env_var_name(prefix: &str, key: &str) -> String {
    format!("{prefix}__{}", key.replace('.', "__").to_uppercase())
}

fn attribute(
    err: &config::ConfigError,
    main: &Path,
    env_prefix: &str,
    layers: &[Layer],
) -> ConfigError {
    let blame = |key: &str, message: String| match origin_of(key, layers) {
        Some(layer) => layer.origin().error(message),
        None => ConfigError::new(main, message),
    };
    match classify(err) {
        Problem::Unknown { key, hint } => {
            let message = if hint.is_empty() {
                format!("unknown key `{key}`")
            } else {
                format!("unknown key `{key}`; {hint}")
            };
            blame(&key, message)
        }
        Problem::Missing { key } => ConfigError::new(
            main,
            format!(
                "missing key `{key}` (set it in this file, in {}/*.toml or with {})",
                drop_in_dir(main).display(),
                env_var_name(env_prefix, &key)
            ),
        ),
        Problem::Invalid {
            key: Some(key),
            text,
        } => blame(&key, format!("key `{key}`: {text}")),
        Problem::Invalid { key: None, text } => ConfigError::new(main, text),
    }
}

/// Makes `path` absolute relative to `base` (the main configuration file's folder) when it is
/// relative. Relative paths in drop-ins and environment overrides use the same base.
pub fn resolve_relative(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// The folder relative paths in the configuration whose main file is `path` are taken from.
pub fn base_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        level: Option<String>,
        net: Net,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Net {
        port: u16,
        #[serde(default)]
        host: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq, Clone, Copy)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        Fast,
        Slow,
    }

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(main: &str) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("app.toml"), main).expect("write main");
            Self { dir }
        }
        fn main(&self) -> PathBuf {
            self.dir.path().join("app.toml")
        }
        fn drop_in(&self, name: &str, text: &str) -> PathBuf {
            let d = self.dir.path().join("app.d");
            std::fs::create_dir_all(&d).expect("mkdir app.d");
            let p = d.join(name);
            std::fs::write(&p, text).expect("write drop-in");
            p
        }
        fn load(&self, env: &[(&str, &str)]) -> Result<Sample, ConfigError> {
            let vars = env
                .iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect::<Vec<_>>();
            let env = env_overrides("APP", vars.into_iter())?;
            load_layers(&self.main(), "APP", &env)
        }
    }

    const MAIN: &str = "name = \"main\"\n[net]\nport = 1\n";

    #[test]
    fn main_file_alone_loads() {
        let f = Fixture::new(MAIN);
        let s = f.load(&[]).expect("loads");
        assert_eq!(s.name, "main");
        assert_eq!(s.net.port, 1);
        assert_eq!(config_layers(&f.main()).expect("layers"), vec![f.main()]);
    }

    #[test]
    fn drop_ins_apply_in_byte_order_and_later_wins() {
        let f = Fixture::new(MAIN);
        let b = f.drop_in("20-b.toml", "name = \"b\"\n[net]\nhost = \"h-b\"\n");
        let a = f.drop_in("10-a.toml", "name = \"a\"\n[net]\nport = 2\n");
        let upper = f.drop_in("Z9.toml", "level = \"upper\"\n");
        f.drop_in("30-ignored.toml.bak", "garbage = [");
        f.drop_in(".40-hidden.toml", "garbage = [");
        f.drop_in("README", "not toml");
        // Byte-wise: '1' < '2' < 'Z'.
        assert_eq!(
            config_layers(&f.main()).expect("layers"),
            vec![f.main(), a, b, upper]
        );
        let s = f.load(&[]).expect("loads");
        assert_eq!(s.name, "b", "20-b comes after 10-a");
        assert_eq!(s.net.port, 2, "10-a overrides the main file");
        assert_eq!(
            s.net.host.as_deref(),
            Some("h-b"),
            "tables merge key by key"
        );
        assert_eq!(s.level.as_deref(), Some("upper"));
    }

    #[test]
    fn environment_wins_over_every_file() {
        let f = Fixture::new(MAIN);
        f.drop_in("10-a.toml", "[net]\nport = 2\n");
        let s = f
            .load(&[
                ("APP__NET__PORT", "3"),
                ("APP__MODE", "slow"),
                ("OTHER", "x"),
            ])
            .expect("loads");
        assert_eq!(s.net.port, 3);
        assert_eq!(s.mode, Some(Mode::Slow));
    }

    #[test]
    fn unknown_key_in_drop_in_names_the_drop_in() {
        let f = Fixture::new(MAIN);
        f.drop_in("10-a.toml", "[net]\nport = 2\n");
        let bad = f.drop_in("20-b.toml", "[net]\nhots = \"x\"\n");
        let e = f.load(&[]).expect_err("unknown key");
        assert_eq!(e.path, bad, "{e}");
        assert!(e.message.contains("unknown key `net.hots`"), "{e}");
        assert!(e.message.contains("host"), "lists accepted keys: {e}");
    }

    #[test]
    fn unknown_top_level_key_names_the_main_file() {
        let f = Fixture::new(&format!("colour = \"red\"\n{MAIN}"));
        let e = f.load(&[]).expect_err("unknown key");
        assert_eq!(e.path, f.main(), "{e}");
        assert!(e.message.contains("unknown key `colour`"), "{e}");
    }

    #[test]
    fn unknown_env_key_names_the_variable() {
        let f = Fixture::new(MAIN);
        let e = f.load(&[("APP__NET__PROT", "3")]).expect_err("unknown key");
        assert_eq!(
            e.to_string(),
            "environment variable APP__NET__PROT: unknown key `net.prot`; expected `port` or `host`",
        );
    }

    #[test]
    fn wrong_type_names_the_last_layer_that_sets_it() {
        let f = Fixture::new(MAIN);
        let bad = f.drop_in("10-a.toml", "[net]\nport = \"eighty\"\n");
        let e = f.load(&[]).expect_err("wrong type");
        assert_eq!(e.path, bad, "{e}");
        assert!(e.message.contains("key `net.port`"), "{e}");
        // A later layer fixing it makes the configuration valid again.
        f.drop_in("20-b.toml", "[net]\nport = 80\n");
        assert_eq!(f.load(&[]).expect("fixed").net.port, 80);
        let e = f
            .load(&[("APP__NET__PORT", "x")])
            .expect_err("env wrong type");
        assert!(
            e.to_string()
                .starts_with("environment variable APP__NET__PORT: key `net.port`"),
            "{e}"
        );
    }

    #[test]
    fn bad_enum_value_names_file_and_key() {
        let f = Fixture::new(&format!("mode = \"medium\"\n{MAIN}"));
        let e = f.load(&[]).expect_err("bad enum");
        assert_eq!(e.path, f.main());
        assert!(e.message.contains("key `mode`"), "{e}");
        assert!(e.message.contains("medium"), "{e}");
    }

    #[test]
    fn missing_key_names_the_main_file_and_the_ways_to_set_it() {
        let f = Fixture::new("name = \"x\"\n[net]\nhost = \"h\"\n");
        let e = f.load(&[]).expect_err("missing");
        assert_eq!(e.path, f.main());
        assert!(e.message.contains("missing key `net.port`"), "{e}");
        assert!(e.message.contains("APP__NET__PORT"), "{e}");
    }

    #[test]
    fn syntax_error_names_the_file_and_line() {
        let f = Fixture::new(MAIN);
        let bad = f.drop_in("10-a.toml", "[net]\nport = 2\nhost = \n");
        let e = f.load(&[]).expect_err("syntax");
        assert_eq!(e.path, bad);
        assert!(e.message.contains("line 3"), "{e}");
    }

    #[test]
    fn unreadable_drop_in_and_folder_are_errors() {
        let f = Fixture::new(MAIN);
        std::fs::create_dir_all(f.dir.path().join("app.d/50-dir.toml")).expect("mkdir");
        let e = f.load(&[]).expect_err("a folder named *.toml");
        assert!(e.path.ends_with("app.d/50-dir.toml"), "{e}");
        assert!(e.message.contains("cannot read"), "{e}");

        let g = Fixture::new(MAIN);
        std::fs::write(g.dir.path().join("app.d"), "a file, not a folder").expect("write");
        let e = g.load(&[]).expect_err("drop-in path is a file");
        assert!(e.path.ends_with("app.d"), "{e}");
    }

    #[test]
    fn missing_main_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.toml");
        let e = load_layers::<Sample>(&path, "APP", &[]).expect_err("missing file");
        assert_eq!(e.path, path);
        assert!(e.message.contains("cannot read"), "{e}");
    }

    #[test]
    fn malformed_env_names_are_rejected() {
        let vars = vec![("APP__NET____PORT".into(), "1".into())];
        let e = env_overrides("APP", vars.into_iter()).expect_err("empty segment");
        assert!(e.to_string().contains("APP__NET____PORT"), "{e}");
    }

    #[test]
    fn load_toml_reads_the_process_environment() {
        // Unique prefix: the environment is shared by every test in this process.
        let prefix = format!("JMDC_TEST_{}_{}", std::process::id(), line!());
        let f = Fixture::new(MAIN);
        std::env::set_var(format!("{prefix}__NET__PORT"), "7");
        let s: Sample = load_toml(&f.main(), &prefix).expect("loads");
        assert_eq!(s.net.port, 7);
        std::env::set_var(format!("{prefix}__NET__SPLTI"), "7");
        let e = load_toml::<Sample>(&f.main(), &prefix).expect_err("unknown env key");
        assert_eq!(
            e.path,
            PathBuf::from(format!("environment variable {prefix}__NET__SPLTI"))
        );
        assert!(e.message.contains("unknown key `net.splti`"), "{e}");
        std::env::remove_var(format!("{prefix}__NET__PORT"));
        std::env::remove_var(format!("{prefix}__NET__SPLTI"));
    }

    #[test]
    fn drop_in_dir_follows_the_stem() {
        assert_eq!(
            drop_in_dir(Path::new("/etc/jmdc/edge.toml")),
            PathBuf::from("/etc/jmdc/edge.d")
        );
        assert_eq!(
            drop_in_dir(Path::new("cloud.toml")),
            PathBuf::from("cloud.d")
        );
    }
}
