//! Reading a configuration: the file, the command-line values over it, the defaults that
//! follow what was set, and the checks, with errors that name the file, line and key.

use std::path::{Path, PathBuf};

use std::net::SocketAddr;

use super::{ByteSize, CertificateConfig, Config, ConfigError, DiskDir, DEFAULT_DISK_SIZE};

/// Command-line values that take precedence over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`, repeatable.
    pub listen: Vec<SocketAddr>,
    /// `--origin`, repeatable.
    pub origins: Vec<String>,
    /// `--admin`.
    pub admin: Option<SocketAddr>,
    /// `--cache-mem`.
    pub cache_memory: Option<String>,
    /// `--cache-dir`, repeatable: replaces `disk.dirs`.
    pub cache_dirs: Vec<PathBuf>,
    /// `--cache-disk`: the size of each `--cache-dir` (or of every configured directory).
    pub cache_disk: Option<String>,
    /// `--peer`, repeatable: replaces `cluster.peers`.
    pub peers: Vec<String>,
    /// `--peer-admin`, repeatable: replaces `cluster.admin`.
    pub peer_admins: Vec<String>,
    /// `--listen-tls`, repeatable: replaces `server.listen_tls`.
    pub listen_tls: Vec<SocketAddr>,
    /// `--tls-cert` and `--tls-key`: replace `tls.certificates` with this one pair.
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// Where a node's configuration comes from: kept so that a reload reads it the same way.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// The file, if any.
    pub file: Option<PathBuf>,
    /// The command-line values that take precedence over it.
    pub overrides: Overrides,
}

impl ConfigSource {
    /// Loads and checks the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.file.as_deref(), &self.overrides)
    }
}

impl Config {
    /// Loads the file (if any), applies the command-line overrides, derives what neither set
    /// from what they did, and checks the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (mut config, text) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: path.to_owned(),
                    source,
                })?;
                (parse_toml(&text, path)?, text)
            }
            None => (Config::default(), String::new()),
        };
        config.apply(overrides)?;
        config.derive_unset(&text);
        let file = file.unwrap_or(Path::new("<command line>"));
        config.check_written(&text, file)?;
        Ok(config)
    }

    /// Parses and checks a config file's text; `file` is used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = parse_toml(text, file)?;
        config.derive_unset(text);
        config.check_written(text, file)?;
        Ok(config)
    }

    /// Gives the settings whose defaults depend on others, and that the file (`text`) does not
    /// set, the value that fits what was set, so that a default never conflicts with a value
    /// the user wrote: `cache.max_object_size` is at most half of `cache.memory`, and
    /// `disk.max_object_size` at least `cache.slice_size`.
    fn derive_unset(&mut self, text: &str) {
        let written = |key: &str| line_of_key(text, key) > 0;
        if !written("cache.max_object_size") {
            let half = ByteSize(self.cache.memory.bytes() / 2);
            self.cache.max_object_size = self.cache.max_object_size.min(half);
        }
        if !written("disk.max_object_size") {
            self.disk.max_object_size = self.disk.max_object_size.max(self.cache.slice_size);
        }
    }

    /// [`Config::check`], with the error naming the line of the file (`text`) that sets the
    /// first of the keys involved.
    fn check_written(&self, text: &str, file: &Path) -> Result<(), ConfigError> {
        self.check().map_err(|(keys, message)| {
            // Blame the first of the keys involved that the file actually sets.
            let (key, line) = keys
                .iter()
                .map(|key| (*key, line_of_key(text, key)))
                .find(|(_, line)| *line > 0)
                .unwrap_or((keys[0], 0));
            ConfigError::Invalid {
                file: file.to_owned(),
                line,
                key: key.to_owned(),
                message,
            }
        })
    }

    pub(super) fn apply(&mut self, overrides: &Overrides) -> Result<(), ConfigError> {
        let flag_error = |key: &str, message: String| ConfigError::Invalid {
            file: PathBuf::from("<command line>"),
            line: 0,
            key: key.to_owned(),
            message,
        };
        if !overrides.listen.is_empty() {
            self.server.listen = overrides.listen.clone();
        }
        if !overrides.origins.is_empty() {
            self.origin.urls = overrides
                .origins
                .iter()
                .map(|text| text.parse().map_err(|e| flag_error("--origin", e)))
                .collect::<Result<_, _>>()?;
        }
        if !overrides.listen_tls.is_empty() {
            self.server.listen_tls = overrides.listen_tls.clone();
        }
        match (&overrides.tls_cert, &overrides.tls_key) {
            (Some(cert), Some(key)) => {
                self.tls.certificates = vec![CertificateConfig {
                    cert: cert.clone(),
                    key: key.clone(),
                    names: Vec::new(),
                }];
            }
            (None, None) => {}
            _ => {
                return Err(flag_error(
                    "--tls-cert",
                    "--tls-cert and --tls-key go together".into(),
                ))
            }
        }
        if let Some(admin) = overrides.admin {
            self.admin.listen = Some(admin);
        }
        if let Some(size) = &overrides.cache_memory {
            self.cache.memory = size.parse().map_err(|e| flag_error("--cache-mem", e))?;
        }
        if !overrides.peers.is_empty() {
            self.cluster.peers = overrides
                .peers
                .iter()
                .map(|text| text.parse().map_err(|e| flag_error("--peer", e)))
                .collect::<Result<_, _>>()?;
        }
        if !overrides.peer_admins.is_empty() {
            self.cluster.admin = overrides
                .peer_admins
                .iter()
                .map(|text| text.parse().map_err(|e| flag_error("--peer-admin", e)))
                .collect::<Result<_, _>>()?;
        }
        let disk_size = match &overrides.cache_disk {
            Some(size) => Some(
                size.parse::<ByteSize>()
                    .map_err(|e| flag_error("--cache-disk", e))?,
            ),
            None => None,
        };
        if !overrides.cache_dirs.is_empty() {
            self.disk.dirs = overrides
                .cache_dirs
                .iter()
                .map(|path| DiskDir {
                    path: path.clone(),
                    size: disk_size.unwrap_or(DEFAULT_DISK_SIZE),
                })
                .collect();
        } else if let Some(size) = disk_size {
            if self.disk.dirs.is_empty() {
                return Err(flag_error(
                    "--cache-disk",
                    "needs a directory: add --cache-dir PATH".into(),
                ));
            }
            for dir in &mut self.disk.dirs {
                dir.size = size;
            }
        }
        Ok(())
    }
}

/// Line (1-based) and key name at a byte offset of the file, for error messages.
/// Reads TOML text into `T`; an error names `file`, the line and the key, and what was
/// expected. Shared by every configuration file Shoal reads.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|error| {
        let (line, key) = match error.span() {
            Some(span) => locate(text, span.start),
            None => (0, String::new()),
        };
        ConfigError::Invalid {
            file: file.to_owned(),
            line,
            key,
            message: error.message().trim().to_owned(),
        }
    })
}

fn locate(text: &str, offset: usize) -> (usize, String) {
    let offset = offset.min(text.len());
    let line = text[..offset].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    let section = current_section(text, line);
    let key = match line_text.split_once('=') {
        Some((key, _)) => key.trim().to_owned(),
        None => line_text
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned(),
    };
    let key = match section {
        Some(section) if !key.is_empty() && !line_text.trim_start().starts_with('[') => {
            format!("{section}.{key}")
        }
        _ => key,
    };
    (line, key)
}

/// The `[table]` header in force at a 1-based line.
fn current_section(text: &str, line: usize) -> Option<String> {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && l.ends_with(']')).then(|| l.trim_matches(['[', ']']).to_owned())
        })
        .last()
}

/// Line where a dotted key (`cache.memory`) is set, or 0 when it is not in the file.
fn line_of_key(text: &str, dotted: &str) -> usize {
    let (section, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    text.lines()
        .enumerate()
        .find(|(number, line)| {
            line.split_once('=').is_some_and(|(k, _)| k.trim() == key)
                && current_section(text, number + 1).as_deref().unwrap_or("") == section
        })
        .map_or(0, |(number, _)| number + 1)
}
