//! What a child process gets from the bridge: a directory (its working directory and HOME) and
//! an environment built from the configuration alone (`--env`, `--env-pass`, PATH), never the
//! bridge's own (which may hold the gateway's secrets). With isolation `user` each user's
//! children run in `<state dir>/users/<key>/`, the key a hash of the subject
//! ([`mcpgw_core::session::Caller::storage_key`]), and `{user_dir}` in an `--env` value names that
//! directory; everything else runs in `<state dir>/shared/`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use mcpgw_core::session::Caller;

use crate::config::{Config, Isolation};

/// The one placeholder an `--env` value may hold.
pub const USER_DIR: &str = "{user_dir}";

/// Why the child environment of the configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A value holds a `{…}` that is not a known placeholder, or an unbalanced brace.
    #[error(
        "--env {name}: {problem} (the only placeholder is {USER_DIR}; write {{{{ and }}}} for braces)"
    )]
    Placeholder {
        /// The variable.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// `{user_dir}` without isolation `user`.
    #[error("--env {0}: {USER_DIR} needs --isolation user")]
    NoUserDir(String),
    /// A variable named twice.
    #[error("--env {0}: set more than once")]
    Repeated(String),
    /// The state directory cannot be created.
    #[error("cannot create {0}: {1}")]
    Dir(PathBuf, std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    UserDir,
}

/// The environment every child gets, with `{user_dir}` left to fill per user.
#[derive(Debug, Clone, Default)]
pub struct ChildEnv {
    vars: Vec<(String, Vec<Piece>)>,
}

impl ChildEnv {
    /// The child environment the configuration names: PATH and the `--env-pass` variables from
    /// the bridge's environment as they are (absent ones are left out), then `--env`. HOME is
    /// the child's directory unless `--env` sets it.
    pub fn from_config(cfg: &Config) -> Result<ChildEnv, EnvError> {
        let mut vars = Vec::new();
        let mut named = HashSet::new();
        for (name, value) in &cfg.env {
            if !named.insert(name.as_str()) {
                return Err(EnvError::Repeated(name.clone()));
            }
            let pieces = parse(value).map_err(|problem| EnvError::Placeholder {
                name: name.clone(),
                problem,
            })?;
            if pieces.contains(&Piece::UserDir) && cfg.isolation != Isolation::User {
                return Err(EnvError::NoUserDir(name.clone()));
            }
            vars.push((name.clone(), pieces));
        }
        let passed = std::iter::once("PATH")
            .chain(cfg.env_pass.iter().map(String::as_str))
            .filter(|n| !named.contains(n))
            .filter_map(|n| Some((n.to_owned(), vec![Piece::Text(std::env::var(n).ok()?)])))
            .collect::<Vec<_>>();
        if !named.contains("HOME") && !cfg.env_pass.iter().any(|n| n == "HOME") {
            vars.push(("HOME".into(), vec![Piece::UserDir]));
        }
        let mut all = passed;
        all.extend(vars);
        Ok(ChildEnv { vars: all })
    }

    /// The variables for a child running in `dir`.
    pub fn render(&self, dir: &Path) -> impl Iterator<Item = (&str, OsString)> {
        self.vars.iter().map(move |(name, pieces)| {
            let mut v = OsString::new();
            for p in pieces {
                match p {
                    Piece::Text(t) => v.push(t),
                    Piece::UserDir => v.push(dir),
                }
            }
            (name.as_str(), v)
        })
    }
}

/// `{user_dir}` and literal text; `{{` and `}}` are braces.
fn parse(value: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("{{") {
            text.push('{');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("}}") {
            text.push('}');
            rest = r;
        } else if let Some(r) = rest.strip_prefix(USER_DIR) {
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::UserDir);
            rest = r;
        } else if c == '{' {
            let name = rest.split('}').next().unwrap_or(rest);
            return Err(format!("unknown placeholder `{name}}}`"));
        } else if c == '}' {
            return Err("unbalanced `}`".into());
        } else {
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// The bridge's state directory and the children's directories under it.
#[derive(Debug, Clone)]
pub struct Dirs {
    root: PathBuf,
}

impl Dirs {
    /// Creates the state directory (mode 0700) and `shared/` in it.
    pub fn create(root: &Path) -> Result<Dirs, EnvError> {
        let root = std::path::absolute(root).map_err(|e| EnvError::Dir(root.to_owned(), e))?;
        let dirs = Dirs { root };
        make_private(&dirs.root)?;
        make_private(&dirs.root.join("users"))?;
        make_private(&dirs.shared())?;
        Ok(dirs)
    }

    /// The directory of children not tied to a user.
    pub fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// `caller`'s private directory, created on first use. It outlives their children: a user's
    /// state survives the children being stopped, replaced or reaped.
    pub fn user(&self, caller: &Caller<'_>) -> Result<PathBuf, EnvError> {
        let dir = self.root.join("users").join(caller.storage_key());
        make_private(&dir)?;
        Ok(dir)
    }
}

fn make_private(dir: &Path) -> Result<(), EnvError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| EnvError::Dir(dir.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_user_dir_or_refused() {
        assert_eq!(
            parse("{user_dir}/memory.json"),
            Ok(vec![Piece::UserDir, Piece::Text("/memory.json".into())])
        );
        assert_eq!(parse("a{{b}}"), Ok(vec![Piece::Text("a{b}".into())]));
        assert!(parse("{home}/x").unwrap_err().contains("{home}"));
        assert!(parse("{user_dir").is_err());
        assert!(parse("x}").is_err());
        assert!(parse("{USER_DIR}").is_err());
    }
}
