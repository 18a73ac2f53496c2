//! Command-line arguments of the LLM worker, parsed and range-checked before anything is loaded.
//!
//! The daemon starts the worker as `--model PATH --threads N [--ctx N]`. Parsing is a pure
//! function of the argument list so that it can be tested without a model; it opens nothing and
//! never looks at the file system (whether the model exists is the engine's question).

use std::ffi::OsString;
use std::path::PathBuf;

/// Context length used when `--ctx` is not given: room for a long visit transcript plus a note.
pub const DEFAULT_CTX: u32 = 4096;
/// Smaller contexts cannot hold a chat template and a useful prompt.
pub const MIN_CTX: u32 = 256;
/// llama.cpp allocates the whole KV cache up front, so an absurd value would only fail later.
pub const MAX_CTX: u32 = 1 << 20;
/// More threads than this is a typo, not a machine.
pub const MAX_THREADS: u32 = 1024;

/// Validated worker arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub model: PathBuf,
    pub threads: u32,
    pub ctx: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error(
        "usage: edge-scribe-llm-worker --model PATH --threads N [--ctx N (default {DEFAULT_CTX})]"
    )]
    Help,
    #[error("missing required argument {0}")]
    Missing(&'static str),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{0} was given more than once")]
    Duplicate(&'static str),
    #[error("unknown argument {0:?}; expected --model, --threads or --ctx")]
    Unknown(String),
    #[error("{flag} must be a whole number, got {value:?}")]
    NotANumber { flag: &'static str, value: String },
    #[error("{flag} must be between {min} and {max}, got {value}")]
    OutOfRange {
        flag: &'static str,
        value: u64,
        min: u32,
        max: u32,
    },
}

#[derive(Clone, Copy)]
enum Flag {
    Model,
    Threads,
    Ctx,
}

impl Flag {
    fn name(self) -> &'static str {
        match self {
            Flag::Model => "--model",
            Flag::Threads => "--threads",
            Flag::Ctx => "--ctx",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "--model" => Some(Flag::Model),
            "--threads" => Some(Flag::Threads),
            "--ctx" => Some(Flag::Ctx),
            _ => None,
        }
    }
}

/// Parses the arguments that follow the program name.
pub fn parse<I>(args: I) -> Result<Args, ArgsError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut model: Option<PathBuf> = None;
    let mut threads: Option<u32> = None;
    let mut ctx: Option<u32> = None;

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // A path may be any bytes, so only the flag itself has to be UTF-8.
        let text = arg.to_string_lossy();
        if text == "--help" || text == "-h" {
            return Err(ArgsError::Help);
        }
        let (flag, inline_value) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (Flag::from_name(name), Some(OsString::from(value)))
            }
            _ => (Flag::from_name(&text), None),
        };
        let Some(flag) = flag else {
            return Err(ArgsError::Unknown(text.into_owned()));
        };
        // `--model=PATH` only works for UTF-8 paths; `--model PATH` takes anything.
        let value = match inline_value.or_else(|| args.next()) {
            Some(value) if !value.is_empty() => value,
            _ => return Err(ArgsError::MissingValue(flag.name())),
        };
        match flag {
            Flag::Model => set_once(&mut model, PathBuf::from(value), flag)?,
            Flag::Threads => set_once(&mut threads, number(flag, &value, 1, MAX_THREADS)?, flag)?,
            Flag::Ctx => set_once(&mut ctx, number(flag, &value, MIN_CTX, MAX_CTX)?, flag)?,
        }
    }

    Ok(Args {
        model: model.ok_or(ArgsError::Missing("--model PATH"))?,
        threads: threads.ok_or(ArgsError::Missing("--threads N"))?,
        ctx: ctx.unwrap_or(DEFAULT_CTX),
    })
}

fn set_once<T>(slot: &mut Option<T>, value: T, flag: Flag) -> Result<(), ArgsError> {
    if slot.is_some() {
        return Err(ArgsError::Duplicate(flag.name()));
    }
    *slot = Some(value);
    Ok(())
}

fn number(flag: Flag, value: &OsString, min: u32, max: u32) -> Result<u32, ArgsError> {
    let text = value.to_string_lossy();
    let parsed: u64 = text.parse().map_err(|_| ArgsError::NotANumber {
        flag: flag.name(),
        value: text.clone().into_owned(),
    })?;
    u32::try_from(parsed)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or(ArgsError::OutOfRange {
            flag: flag.name(),
            value: parsed,
            min,
            max,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Args, ArgsError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn ctx_defaults_when_omitted() {
        let args = parse_strs(&["--model", "/m/a.gguf", "--threads", "2"]).unwrap();
        assert_eq!(
            args,
            Args {
                model: PathBuf::from("/m/a.gguf"),
                threads: 2,
                ctx: DEFAULT_CTX
            }
        );
    }

    #[test]
    fn flags_in_any_order_and_with_equals() {
        let args = parse_strs(&["--ctx=2048", "--threads=4", "--model=/m/b.gguf"]).unwrap();
        assert_eq!(args.model, PathBuf::from("/m/b.gguf"));
        assert_eq!(args.threads, 4);
        assert_eq!(args.ctx, 2048);
    }

    #[test]
    fn model_and_threads_are_required() {
        assert_eq!(
            parse_strs(&["--threads", "2"]),
            Err(ArgsError::Missing("--model PATH"))
        );
        assert_eq!(
            parse_strs(&["--model", "x.gguf"]),
            Err(ArgsError::Missing("--threads N"))
        );
    }

    #[test]
    fn flag_without_value_is_refused() {
        assert_eq!(
            parse_strs(&["--model"]),
            Err(ArgsError::MissingValue("--model"))
        );
        assert_eq!(
            parse_strs(&["--model=", "--threads", "1"]),
            Err(ArgsError::MissingValue("--model"))
        );
    }

    #[test]
    fn numbers_are_range_checked() {
        assert!(matches!(
            parse_strs(&["--model", "m", "--threads", "0"]),
            Err(ArgsError::OutOfRange {
                flag: "--threads",
                value: 0,
                ..
            })
        ));
        assert!(matches!(
            parse_strs(&["--model", "m", "--threads", "1", "--ctx", "16"]),
            Err(ArgsError::OutOfRange {
                flag: "--ctx",
                value: 16,
                ..
            })
        ));
        assert!(matches!(
            parse_strs(&["--model", "m", "--threads", "99999999999"]),
            Err(ArgsError::OutOfRange {
                flag: "--threads",
                ..
            })
        ));
        assert!(matches!(
            parse_strs(&["--model", "m", "--threads", "two"]),
            Err(ArgsError::NotANumber {
                flag: "--threads",
                ..
            })
        ));
        assert!(matches!(
            parse_strs(&["--model", "m", "--threads", "-1"]),
            Err(ArgsError::NotANumber { .. })
        ));
    }

    #[test]
    fn unknown_and_repeated_flags_are_refused() {
        assert_eq!(
            parse_strs(&["--model", "m", "--threads", "1", "--gpu"]),
            Err(ArgsError::Unknown("--gpu".into()))
        );
        assert_eq!(
            parse_strs(&["--model", "m", "--model", "n", "--threads", "1"]),
            Err(ArgsError::Duplicate("--model"))
        );
    }

    #[test]
    fn help_is_its_own_outcome() {
        assert_eq!(parse_strs(&["--help"]), Err(ArgsError::Help));
        assert_eq!(parse_strs(&["--model", "m", "-h"]), Err(ArgsError::Help));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_model_path_is_kept_verbatim() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(vec![b'/', 0xff, b'.', b'g']);
        let args = parse(vec![
            "--model".into(),
            raw.clone(),
            "--threads".into(),
            "1".into(),
        ])
        .unwrap();
        assert_eq!(args.model.as_os_str(), raw.as_os_str());
    }
}
