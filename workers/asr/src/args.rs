//! Command-line arguments of the ASR worker, parsed by hand: there are two of them, and the
//! daemon is the only caller.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "usage: edge-scribe-asr-worker --model PATH [--threads N]

  --model PATH   ggml Whisper model (as written by `edge-scribe` from a CTranslate2 model)
  --threads N    inference threads, 1-256 (default: the number of CPUs, at most 8)

Speaks the edge-scribe worker protocol on stdin/stdout; not meant to be run by hand.";

/// Upper bound on `--threads`: more is a typo, not a machine.
const MAX_THREADS: u32 = 256;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgsError {
    #[error("--model is required: pass the path of the converted ggml model")]
    MissingModel,
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("--threads must be a whole number from 1 to {MAX_THREADS}, got {0:?}")]
    BadThreads(String),
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("model file {0} does not exist or is not a file: check the models directory")]
    ModelNotFound(PathBuf),
}

#[derive(Debug, PartialEq)]
pub struct Args {
    pub model: PathBuf,
    pub threads: u32,
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Args),
    Help,
}

impl Args {
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, ArgsError> {
        let mut model = None;
        let mut threads = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let arg = arg.to_string_lossy().into_owned();
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &'static str| -> Result<OsString, ArgsError> {
                match inline {
                    Some(v) => Ok(OsString::from(v)),
                    None => args.next().ok_or(ArgsError::MissingValue(name)),
                }
            };
            match flag.as_str() {
                "--model" => model = Some(PathBuf::from(value("--model")?)),
                "--threads" => {
                    let raw = value("--threads")?.to_string_lossy().into_owned();
                    let n = raw
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_THREADS).contains(n))
                        .ok_or(ArgsError::BadThreads(raw))?;
                    threads = Some(n);
                }
                "-h" | "--help" => return Ok(Parsed::Help),
                _ => return Err(ArgsError::Unknown(arg)),
            }
        }
        let model = model.ok_or(ArgsError::MissingModel)?;
        if !model.is_file() {
            return Err(ArgsError::ModelNotFound(model));
        }
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get().min(8))
                .try_into()
                .unwrap_or(1)
        });
        Ok(Parsed::Run(Args { model, threads }))
    }

    /// The model's file name alone: a full path can reveal a clinic's layout.
    pub fn model_file_name(&self) -> String {
        self.model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, ArgsError> {
        Args::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn model_and_threads_are_read_in_both_spellings() {
        let model = std::env::current_exe().unwrap();
        let m = model.to_str().unwrap();
        let expected = Parsed::Run(Args {
            model: model.clone(),
            threads: 3,
        });
        assert_eq!(parse(&["--model", m, "--threads", "3"]).unwrap(), expected);
        assert_eq!(
            parse(&[&format!("--model={m}"), "--threads=3"]).unwrap(),
            expected
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let m = std::env::current_exe().unwrap();
        let m = m.to_str().unwrap();
        assert_eq!(parse(&[]), Err(ArgsError::MissingModel));
        assert_eq!(parse(&["--model"]), Err(ArgsError::MissingValue("--model")));
        assert_eq!(
            parse(&["--model", m, "--threads", "0"]),
            Err(ArgsError::BadThreads("0".into()))
        );
        assert_eq!(
            parse(&["--model", m, "--threads", "many"]),
            Err(ArgsError::BadThreads("many".into()))
        );
        assert_eq!(parse(&["--beam"]), Err(ArgsError::Unknown("--beam".into())));
        assert!(matches!(
            parse(&["--model", "/nonexistent/ggml.bin"]),
            Err(ArgsError::ModelNotFound(_))
        ));
        assert_eq!(parse(&["--help"]), Ok(Parsed::Help));
    }
}
