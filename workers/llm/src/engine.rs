//! The one door to llama.cpp: loads a GGUF, turns a chat into a prompt with the model's own chat
//! template, and generates a completion under an optional GBNF grammar.
//!
//! Nothing else in the worker names a llama-cpp-2 type. This module opens only the model file,
//! writes no file, and never puts prompt, message or generated text into an error or a log: every
//! [`GenerateError`] carries only indices, counts and llama.cpp status codes, so its message can
//! go to the daemon and to stderr as is. Each request starts from an empty KV cache and leaves it
//! empty, so one visit's text can neither steer nor linger into the next request.

use std::ffi::{c_char, CStr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edge_scribe_protocol::ChatMessage;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{
    send_logs_to_tracing, ApplyChatTemplateError, ChatTemplateError, DecodeError, GrammarError,
    LogOptions,
};

use crate::diag::{self, Event};

/// The only rule name the worker starts a grammar from, as the protocol promises the daemon.
const GRAMMAR_ROOT: &str = "root";
/// Roles every chat template llama.cpp knows can render.
const ROLES: [&str; 3] = ["system", "user", "assistant"];

/// Why the model could not be made ready. Start-up only, so paths may appear: they name the
/// clinic's configuration, not a patient.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model file {0} does not exist or is not a regular file; check --model")]
    NotAFile(PathBuf),
    #[error("model path {0:?} is not valid UTF-8, which llama.cpp requires; rename the file")]
    NonUtf8Path(PathBuf),
    #[error("the llama.cpp backend could not be initialised")]
    Backend,
    #[error(
        "llama.cpp could not load {0} (not a GGUF file, truncated, or an architecture this \
         llama.cpp build does not support)"
    )]
    Load(PathBuf),
    #[error("model has no chat template; edge-scribe needs an instruction-tuned GGUF")]
    NoChatTemplate,
    #[error("the model's chat template is not valid UTF-8; the GGUF is damaged")]
    BadChatTemplate,
    #[error(
        "the model's chat template is not a format llama.cpp's built-in formatter recognises \
         (ChatML, Llama 3, Gemma, Mistral, Phi, ...); use a GGUF with a standard template"
    )]
    UnsupportedChatTemplate,
    #[error(
        "llama.cpp could not create a context of {n_ctx} tokens (out of memory?); lower --ctx"
    )]
    Context { n_ctx: u32 },
}

/// Why one request failed. Every message is safe to send to the daemon and to print.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the request has no messages")]
    NoMessages,
    #[error("message {index} has a role other than system, user or assistant")]
    UnknownRole { index: usize },
    #[error("message {index} contains a NUL character")]
    NulInMessage { index: usize },
    #[error(
        "message {index} contains text the model reads as one of its control tokens (such as an \
         end-of-turn marker); remove it before sending"
    )]
    ControlText { index: usize },
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    #[error("temperature must be a finite number >= 0")]
    BadTemperature,
    #[error("the grammar has no `root` rule")]
    GrammarNoRoot,
    #[error("the grammar contains a NUL character")]
    GrammarNul,
    #[error(
        "the grammar could not be parsed: check its GBNF syntax, that a `root` rule exists, that \
         every referenced rule is defined and that no rule is left-recursive"
    )]
    GrammarInvalid,
    #[error(
        "the model's chat template could not be applied to these messages (llama.cpp code {code})"
    )]
    Template { code: i32 },
    #[error("the model's chat template produced text that is not valid UTF-8")]
    TemplateOutput,
    #[error("the chat template produced an empty prompt")]
    EmptyPrompt,
    #[error(
        "the prompt is {prompt_tokens} tokens but the context holds {n_ctx}; shorten the \
         messages or restart the worker with a larger --ctx"
    )]
    PromptTooLong { prompt_tokens: usize, n_ctx: u32 },
    #[error("llama.cpp failed to decode the {stage}: {source}")]
    Decode {
        stage: &'static str,
        source: DecodeError,
    },
    #[error("internal error: a token did not fit the batch buffer")]
    Batch,
    #[error("the sampler selected no token")]
    NoTokenSelected,
    #[error("the grammar allows no token the model can produce at this point")]
    GrammarDeadEnd,
    #[error("the grammar rejected the token the sampler chose")]
    GrammarRejected,
}

/// Why generation stopped (for diagnostics; the protocol does not carry it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model emitted an end-of-generation token. A completed grammar allows nothing else,
    /// so this is also how a grammar-constrained answer ends.
    EndOfGeneration,
    MaxTokens,
    /// The KV cache is full; the text is cut short.
    ContextFull,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfGeneration => "end_of_generation",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextFull => "context_full",
        }
    }
}

/// One `Generate` request, borrowed from the decoded frame.
pub struct GenerateRequest<'r> {
    pub messages: &'r [ChatMessage],
    pub grammar: Option<&'r str>,
    pub max_tokens: u32,
    pub seed: u32,
    pub temperature: f32,
}

/// The result of one request.
#[derive(Debug)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub prompt_ms: u64,
    pub generation_ms: u64,
    pub stop: StopReason,
}

/// A loaded model with a usable chat template.
pub struct Engine {
    // Declared before `backend` so that it is freed first.
    model: LlamaModel,
    backend: LlamaBackend,
    template: LlamaChatTemplate,
    n_ctx: u32,
    threads: u32,
}

impl Engine {
    /// Silences llama.cpp, loads the model and checks that its chat template can be applied.
    /// `requested_ctx` is lowered to the model's training context if it is larger.
    pub fn load(path: &Path, threads: u32, requested_ctx: u32) -> Result<Self, LoadError> {
        // `is_file` only stats the path; llama.cpp opens it below.
        if !path.is_file() {
            return Err(LoadError::NotAFile(path.to_path_buf()));
        }
        if path.to_str().is_none() {
            return Err(LoadError::NonUtf8Path(path.to_path_buf()));
        }

        // Before the backend exists, so that not even device discovery logs. The log callback
        // can carry prompt-derived text (e.g. token dumps in debug logs); what llama.cpp writes
        // to stderr directly is caught by `streams`.
        send_logs_to_tracing(LogOptions::default().with_logs_enabled(false));
        install_abort_hook();

        let backend = LlamaBackend::init().map_err(|_| LoadError::Backend)?;
        let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default())
            .map_err(|_| LoadError::Load(path.to_path_buf()))?;
        let template = match model.chat_template(None) {
            Ok(template) => template,
            Err(ChatTemplateError::MissingTemplate) => return Err(LoadError::NoChatTemplate),
            Err(_) => return Err(LoadError::BadChatTemplate),
        };
        // llama.cpp formats chats with built-in renderers picked by sniffing the template; an
        // unknown template only shows up when applied, so find out now rather than per request.
        let probe = LlamaChatMessage::new("user".to_owned(), "ping".to_owned())
            .map_err(|_| LoadError::UnsupportedChatTemplate)?;
        model
            .apply_chat_template(&template, &[probe], true)
            .map_err(|_| LoadError::UnsupportedChatTemplate)?;

        let n_ctx = effective_ctx(requested_ctx, model.n_ctx_train());
        Ok(Engine {
            model,
            backend,
            template,
            n_ctx,
            threads,
        })
    }

    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    pub fn n_ctx_train(&self) -> u32 {
        self.model.n_ctx_train()
    }

    pub fn n_vocab(&self) -> i32 {
        self.model.n_vocab()
    }

    /// Creates the context that serves every request. It is reused (and emptied after each
    /// request) because allocating a KV cache per request costs far more than clearing one.
    pub fn session(&self) -> Result<Session<'_>, LoadError> {
        let n_ctx = NonZeroU32::new(self.n_ctx).ok_or(LoadError::Context { n_ctx: 0 })?;
        // `args` caps threads far below i32::MAX.
        let threads = i32::try_from(self.threads).unwrap_or(i32::MAX);
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(n_ctx))
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_no_perf(true);
        let ctx = self
            .model
            .new_context(&self.backend, params)
            .map_err(|_| LoadError::Context { n_ctx: self.n_ctx })?;
        // llama.cpp caps n_batch at n_ctx for causal models; ask the context what it settled on.
        let n_batch = usize::try_from(ctx.n_batch()).unwrap_or(512).max(1);
        let n_vocab = usize::try_from(self.model.n_vocab()).unwrap_or(0);
        Ok(Session {
            engine: self,
            ctx,
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            candidates: Vec::with_capacity(n_vocab),
        })
    }

    /// Renders the chat with the model's template, ending with the assistant's opening tag.
    fn render(&self, messages: &[ChatMessage]) -> Result<String, GenerateError> {
        let mut chat = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            if self.contains_control_text(&message.content) {
                return Err(GenerateError::ControlText { index });
            }
            // The NulError is dropped on purpose: it holds the message bytes.
            let entry = LlamaChatMessage::new(message.role.clone(), message.content.clone())
                .map_err(|_| GenerateError::NulInMessage { index })?;
            chat.push(entry);
        }
        self.model
            .apply_chat_template(&self.template, &chat, true)
            .map_err(|e| match e {
                ApplyChatTemplateError::FfiError(code) => GenerateError::Template { code },
                ApplyChatTemplateError::FromUtf8Error(_) => GenerateError::TemplateOutput,
                ApplyChatTemplateError::NulError(_) | ApplyChatTemplateError::NullResult => {
                    GenerateError::Template { code: -1 }
                }
            })
    }

    /// Whether `text` holds the literal text of a control token (e.g. `<|im_end|>`). The
    /// rendered prompt is tokenized with special-token parsing on, because the template's own
    /// markers must become control tokens; without this check a transcript could close the
    /// user turn and write its own instructions.
    fn contains_control_text(&self, text: &str) -> bool {
        let vocab = self.model.vocab();
        vocab
            .tokenize(text.as_bytes(), false, true)
            .into_iter()
            .any(|token| vocab.is_control(token) || vocab.is_eog(token))
    }

    fn tokenize_prompt(&self, prompt: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        drop_duplicate_bos(&mut tokens, vocab.bos());
        tokens
    }

    fn sampling(&self, request: &GenerateRequest<'_>) -> Result<Sampling, GenerateError> {
        let grammar = match request.grammar {
            None => None,
            Some(grammar) => Some(
                LlamaSampler::grammar(&self.model, grammar, GRAMMAR_ROOT).map_err(|e| match e {
                    GrammarError::RootNotFound => GenerateError::GrammarNoRoot,
                    GrammarError::GrammarNullBytes => GenerateError::GrammarNul,
                    GrammarError::NullGrammar | GrammarError::TriggerWordNullBytes => {
                        GenerateError::GrammarInvalid
                    }
                })?,
            ),
        };
        let picker = if request.temperature > 0.0 {
            LlamaSampler::chain(
                [
                    LlamaSampler::temp(request.temperature),
                    LlamaSampler::dist(request.seed),
                ],
                true,
            )
        } else {
            LlamaSampler::greedy()
        };
        Ok(Sampling { grammar, picker })
    }
}

/// The samplers of one request. The grammar is kept out of the picker's chain so that it can be
/// consulted for the picked token alone (see [`Session::sample`]).
struct Sampling {
    grammar: Option<LlamaSampler>,
    /// Greedy, or temperature then a seeded draw.
    picker: LlamaSampler,
}

/// The context and scratch buffers that serve requests one after another.
pub struct Session<'e> {
    engine: &'e Engine,
    ctx: LlamaContext<'e>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    candidates: Vec<LlamaTokenData>,
}

impl Session<'_> {
    /// Serves one request. The KV cache is cleared afterwards whatever the outcome.
    pub fn generate(&mut self, request: &GenerateRequest<'_>) -> Result<Generation, GenerateError> {
        let result = self.generate_inner(request);
        // Clears cells and zeroes the buffers, so the next request starts empty and this
        // request's keys and values do not stay in memory while the worker idles.
        self.ctx.clear_kv_cache();
        result
    }

    fn generate_inner(
        &mut self,
        request: &GenerateRequest<'_>,
    ) -> Result<Generation, GenerateError> {
        validate(request)?;
        let engine = self.engine;
        // Parsed before any decoding, so a bad grammar fails fast.
        let mut sampling = engine.sampling(request)?;

        let prompt_started = Instant::now();
        let prompt = engine.render(request.messages)?;
        let tokens = engine.tokenize_prompt(&prompt);
        drop(prompt);
        let n_ctx = engine.n_ctx;
        let prompt_tokens = check_fits(tokens.len(), n_ctx)?;
        self.decode_prompt(&tokens)?;
        let prompt_ms = millis(prompt_started.elapsed());

        let generation_started = Instant::now();
        let vocab = engine.model.vocab();
        let mut text = Vec::new();
        let mut generated: u32 = 0;
        let mut n_past = prompt_tokens;
        let stop = loop {
            let token = self.sample(&mut sampling)?;
            if vocab.is_eog(token) {
                break StopReason::EndOfGeneration;
            }
            generated += 1;
            // Raw pieces, concatenated: exactly the bytes the grammar checked. `special: false`
            // renders stray control tokens as nothing.
            vocab.token_to_piece_into(token, &mut text, false, None);
            if generated >= request.max_tokens {
                break StopReason::MaxTokens;
            }
            if n_past >= n_ctx {
                break StopReason::ContextFull;
            }
            self.decode_one(token, n_past)?;
            n_past += 1;
        };
        let generation_ms = millis(generation_started.elapsed());

        Ok(Generation {
            text: utf8_text(text),
            prompt_tokens,
            generated_tokens: generated,
            prompt_ms,
            generation_ms,
            stop,
        })
    }

    /// Decodes the prompt in `n_batch`-sized chunks; only the last token needs logits.
    fn decode_prompt(&mut self, tokens: &[LlamaToken]) -> Result<(), GenerateError> {
        let last = tokens
            .len()
            .checked_sub(1)
            .ok_or(GenerateError::EmptyPrompt)?;
        for (chunk_index, chunk) in tokens.chunks(self.n_batch).enumerate() {
            self.batch.clear();
            for (offset, &token) in chunk.iter().enumerate() {
                let index = chunk_index * self.n_batch + offset;
                // `check_fits` bounded the prompt by n_ctx, itself a u32 well below i32::MAX.
                let pos = i32::try_from(index).map_err(|_| GenerateError::Batch)?;
                self.batch
                    .add(token, pos, &[0], index == last)
                    .map_err(|_| GenerateError::Batch)?;
            }
            self.ctx
                .decode(&mut self.batch)
                .map_err(|source| GenerateError::Decode {
                    stage: "prompt",
                    source,
                })?;
        }
        Ok(())
    }

    fn decode_one(&mut self, token: LlamaToken, pos: u32) -> Result<(), GenerateError> {
        let pos = i32::try_from(pos).map_err(|_| GenerateError::Batch)?;
        self.batch.clear();
        self.batch
            .add(token, pos, &[0], true)
            .map_err(|_| GenerateError::Batch)?;
        self.ctx
            .decode(&mut self.batch)
            .map_err(|source| GenerateError::Decode {
                stage: "generated text",
                source,
            })
    }

    /// Picks the next token from the last decoded position's logits.
    ///
    /// With a grammar, the picker first chooses freely and the grammar judges only that one
    /// token; only if it is refused are all candidates filtered by the grammar and the pick
    /// repeated (llama.cpp's own sampler does the same). Filtering the whole vocabulary through
    /// the grammar is the dominant cost of constrained decoding, and the free pick is usually
    /// allowed. The result is unchanged: greedy still takes the best allowed token, and a
    /// seeded draw still follows the grammar-restricted distribution.
    ///
    /// Sampling is done by hand rather than with `LlamaSampler::sample`, which ends in
    /// llama.cpp's `llama_sampler_accept` without a C++ exception guard: a grammar that rejects
    /// the token throws, and an exception crossing into Rust aborts the worker. Here samplers
    /// only filter and pick (no exception paths), and acceptance goes through `try_accept`,
    /// whose shim catches exceptions.
    fn sample(&mut self, sampling: &mut Sampling) -> Result<LlamaToken, GenerateError> {
        let last = self.batch.n_tokens() - 1;
        let logits = self.ctx.get_logits_ith(last);
        fill_candidates(&mut self.candidates, logits);
        let free = pick(&mut self.candidates, &mut sampling.picker)?;

        let chosen = match sampling.grammar.as_mut() {
            None => free,
            Some(grammar) => {
                if grammar_allows(grammar, free) {
                    free
                } else {
                    fill_candidates(&mut self.candidates, logits);
                    let mut all =
                        LlamaTokenDataArray::new(std::mem::take(&mut self.candidates), false);
                    all.apply_sampler(grammar);
                    self.candidates = all.data;
                    let constrained = pick(&mut self.candidates, &mut sampling.picker)?;
                    // The grammar marks refused tokens with -inf; if the pick is one of them,
                    // every token was refused.
                    if !constrained.logit().is_finite() {
                        return Err(GenerateError::GrammarDeadEnd);
                    }
                    constrained
                }
            }
        };

        let token = chosen.id();
        if let Some(grammar) = sampling.grammar.as_mut() {
            grammar
                .try_accept(token)
                .map_err(|_| GenerateError::GrammarRejected)?;
        }
        // Greedy and dist keep no per-token state, but accepting keeps the picker correct if it
        // ever gains a stage that does (e.g. a repetition penalty).
        sampling.picker.accept(token);
        Ok(token)
    }
}

/// Refills `buffer` with one candidate per vocabulary entry (reusing its allocation).
fn fill_candidates(buffer: &mut Vec<LlamaTokenData>, logits: &[f32]) {
    buffer.clear();
    buffer.extend(
        (0_i32..)
            .zip(logits)
            .map(|(id, &logit)| LlamaTokenData::new(LlamaToken::new(id), logit, 0.0)),
    );
}

/// Runs `picker` over the candidates in `buffer` and returns its choice; the buffer's
/// allocation is handed back for the next token.
fn pick(
    buffer: &mut Vec<LlamaTokenData>,
    picker: &mut LlamaSampler,
) -> Result<LlamaTokenData, GenerateError> {
    let mut candidates = LlamaTokenDataArray::new(std::mem::take(buffer), false);
    candidates.apply_sampler(picker);
    let chosen = candidates
        .selected
        .and_then(|index| candidates.data.get(index))
        .copied();
    *buffer = candidates.data;
    chosen.ok_or(GenerateError::NoTokenSelected)
}

/// Whether the grammar, in its current state, allows `candidate` next.
fn grammar_allows(grammar: &mut LlamaSampler, candidate: LlamaTokenData) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![candidate], false);
    one.apply_sampler(grammar);
    one.data.first().is_some_and(|c| c.logit().is_finite())
}

/// Checks the request's numbers and roles before any work is done.
fn validate(request: &GenerateRequest<'_>) -> Result<(), GenerateError> {
    if request.messages.is_empty() {
        return Err(GenerateError::NoMessages);
    }
    if let Some(index) = request
        .messages
        .iter()
        .position(|m| !ROLES.contains(&m.role.as_str()))
    {
        return Err(GenerateError::UnknownRole { index });
    }
    if request.max_tokens == 0 {
        return Err(GenerateError::ZeroMaxTokens);
    }
    if !request.temperature.is_finite() || request.temperature < 0.0 {
        return Err(GenerateError::BadTemperature);
    }
    Ok(())
}

/// The context actually allocated: the requested size, but never beyond what the model was
/// trained on (0 means the GGUF does not say).
fn effective_ctx(requested: u32, n_ctx_train: u32) -> u32 {
    if n_ctx_train == 0 {
        requested
    } else {
        requested.min(n_ctx_train)
    }
}

/// The prompt must leave at least one cell free for the first generated token.
fn check_fits(prompt_tokens: usize, n_ctx: u32) -> Result<u32, GenerateError> {
    u32::try_from(prompt_tokens)
        .ok()
        .filter(|&n| n < n_ctx)
        .ok_or(GenerateError::PromptTooLong {
            prompt_tokens,
            n_ctx,
        })
}

/// Templates that already write the BOS marker, tokenized with `add_special`, start with two
/// BOS tokens, which degrades some models; keep one.
fn drop_duplicate_bos(tokens: &mut Vec<LlamaToken>, bos: LlamaToken) {
    if tokens.len() >= 2 && tokens[0] == bos && tokens[1] == bos {
        tokens.remove(0);
    }
}

/// Generated bytes as text. A multi-byte character cut off by `max_tokens` is dropped rather
/// than turned into a replacement character; invalid bytes elsewhere become U+FFFD.
fn utf8_text(mut bytes: Vec<u8>) -> String {
    if let Err(e) = std::str::from_utf8(&bytes) {
        if e.error_len().is_none() {
            bytes.truncate(e.valid_up_to());
        }
    }
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Makes a native abort leave one line on the diagnostic stream (its source location, and the
/// expression of a failed assert) instead of ggml's default: the full message on the swallowed
/// fd 2 and a fork of gdb to print a backtrace.
fn install_abort_hook() {
    // SAFETY: ggml keeps the function pointer in a global and calls it once, from the aborting
    // thread, right before `abort()`. `on_native_abort` has exactly the C signature ggml
    // expects and neither unwinds nor keeps the pointer it is given.
    unsafe {
        llama_cpp_sys_2::ggml_set_abort_callback(Some(on_native_abort));
    }
}

extern "C" fn on_native_abort(message: *const c_char) {
    let summary = if message.is_null() {
        diag::abort_summary("")
    } else {
        // SAFETY: ggml passes its own NUL-terminated message buffer, which lives until the
        // process aborts after this returns; it is only read here.
        let text = unsafe { CStr::from_ptr(message) };
        diag::abort_summary(&text.to_string_lossy())
    };
    diag::emit(&Event::NativeAbort { summary });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }

    fn request(messages: &[ChatMessage], max_tokens: u32, temperature: f32) -> GenerateRequest<'_> {
        GenerateRequest {
            messages,
            grammar: None,
            max_tokens,
            seed: 0,
            temperature,
        }
    }

    #[test]
    fn validation_accepts_an_ordinary_chat() {
        let chat = [message("system", "be brief"), message("user", "hi")];
        assert!(validate(&request(&chat, 16, 0.0)).is_ok());
        assert!(validate(&request(&chat, 1, 0.7)).is_ok());
    }

    #[test]
    fn validation_refuses_empty_chats_odd_roles_and_bad_numbers() {
        assert!(matches!(
            validate(&request(&[], 16, 0.0)),
            Err(GenerateError::NoMessages)
        ));
        let chat = [message("user", "hi"), message("tool", "x")];
        assert!(matches!(
            validate(&request(&chat, 16, 0.0)),
            Err(GenerateError::UnknownRole { index: 1 })
        ));
        let chat = [message("user", "hi")];
        assert!(matches!(
            validate(&request(&chat, 0, 0.0)),
            Err(GenerateError::ZeroMaxTokens)
        ));
        for temperature in [-0.1, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                validate(&request(&chat, 8, temperature)),
                Err(GenerateError::BadTemperature)
            ));
        }
    }

    #[test]
    fn error_messages_never_carry_request_text() {
        let chat = [message("user", "Mrs Example has chest pain")];
        let errors = [
            validate(&request(&chat, 0, 0.0)).err(),
            check_fits(5000, 4096).err(),
            Some(GenerateError::ControlText { index: 0 }),
        ];
        for error in errors.into_iter().flatten() {
            assert!(!error.to_string().contains("Example"), "{error}");
        }
    }

    #[test]
    fn ctx_is_capped_by_the_training_context() {
        assert_eq!(effective_ctx(4096, 8192), 4096);
        assert_eq!(effective_ctx(16384, 8192), 8192);
        assert_eq!(effective_ctx(4096, 0), 4096);
    }

    #[test]
    fn prompt_must_leave_room_for_one_token() {
        assert_eq!(check_fits(4095, 4096).ok(), Some(4095));
        assert!(matches!(
            check_fits(4096, 4096),
            Err(GenerateError::PromptTooLong {
                prompt_tokens: 4096,
                n_ctx: 4096
            })
        ));
        assert!(check_fits(usize::MAX, 4096).is_err());
    }

    #[test]
    fn duplicate_bos_is_dropped_once() {
        let bos = LlamaToken::new(1);
        let mut tokens = vec![bos, bos, LlamaToken::new(5)];
        drop_duplicate_bos(&mut tokens, bos);
        assert_eq!(tokens, vec![bos, LlamaToken::new(5)]);
        drop_duplicate_bos(&mut tokens, bos);
        assert_eq!(tokens, vec![bos, LlamaToken::new(5)]);
        let mut short = vec![bos];
        drop_duplicate_bos(&mut short, bos);
        assert_eq!(short, vec![bos]);
    }

    #[test]
    fn text_cut_inside_a_character_loses_only_that_character() {
        let mut bytes = "dose: 5 µg".as_bytes().to_vec();
        bytes.pop(); // "g"
        bytes.pop(); // second byte of "µ"
        assert_eq!(utf8_text(bytes), "dose: 5 ");
        assert_eq!(utf8_text(b"ok".to_vec()), "ok");
        assert_eq!(utf8_text(vec![b'a', 0xff, b'b']), "a\u{fffd}b");
    }
}
