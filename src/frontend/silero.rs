//! Silero VAD v6 (16 kHz) on tract-onnx: a neural speech probability per 32 ms frame, and the
//! hysteresis that turns those probabilities into speech intervals.
//!
//! The published ONNX graph picks its 8 kHz or 16 kHz network with an `If` on the `sr` input, and
//! tract cannot type a graph whose two branches disagree. This box only ever feeds 16 kHz audio,
//! so at load time the graph is rewritten with the 16 kHz branch inlined, `sr` disappears, and the
//! inner shape-dependent `If`s fold away once the input shapes are fixed. Weights are the ONNX
//! initializers (the `.safetensors` shipped beside it holds different weights).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::speech::VoicedGate;

const SAMPLE_RATE: usize = 16_000;
/// Silero v5+ sees each 512-sample frame with the last 64 samples of the previous one in front;
/// without them the model's STFT edge differs from training and probabilities drift.
const CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;
const SR_16K: i64 = 16_000;
/// Silero needs some history to settle after speech; webrtc-vad in its least aggressive mode
/// also drops weak word endings, so the gate stays open this long after it last heard voice.
const GATE_HANGOVER: usize = SAMPLE_RATE * 300 / 1000;
/// Frames run (and discarded) before the gate reopens; see `gated_probabilities`.
const GATE_PREROLL_FRAMES: usize = 16;

type Plan = Arc<TypedRunnableModel>;

#[derive(Debug, thiserror::Error)]
pub enum SileroError {
    #[error("cannot read the Silero VAD model {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ONNX model: {reason}")]
    NotOnnx { path: PathBuf, reason: String },
    #[error("{path} is not the Silero VAD graph this code expects: {reason}")]
    UnexpectedGraph { path: PathBuf, reason: String },
    #[error("tract could not prepare the Silero VAD model {path}: {reason}")]
    Prepare { path: PathBuf, reason: String },
    #[error("a Silero VAD frame must hold {expected} samples, got {got}")]
    FrameLength { expected: usize, got: usize },
    #[error("Silero VAD inference failed: {0}")]
    Inference(String),
}

/// The Silero VAD network with its recurrent state. One instance serves one stream at a time.
pub struct SileroVad {
    plan: Plan,
    /// Context followed by the current frame: the model's input, reused to avoid allocation.
    window: Vec<f32>,
    state: Vec<f32>,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad").finish_non_exhaustive()
    }
}

impl SileroVad {
    /// 32 ms at 16 kHz: the only frame length the 16 kHz network accepts.
    pub const FRAME: usize = 512;

    pub fn load(model_path: &Path) -> Result<SileroVad, SileroError> {
        let path = model_path.to_path_buf();
        let mut bytes = Vec::new();
        std::fs::File::open(model_path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|source| SileroError::Read {
                path: path.clone(),
                source,
            })?;
        let mut proto = onnx()
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(|e| SileroError::NotOnnx {
                path: path.clone(),
                reason: format!("{e:#}"),
            })?;
        let graph = match proto.graph.as_mut() {
            Some(graph) if !graph.node.is_empty() => graph,
            _ => {
                return Err(SileroError::NotOnnx {
                    path,
                    reason: "it holds no graph".into(),
                })
            }
        };
        select_16k(graph).map_err(|reason| SileroError::UnexpectedGraph {
            path: path.clone(),
            reason,
        })?;
        let plan = prepare(&mut proto).map_err(|e| SileroError::Prepare {
            path,
            reason: format!("{e:#}"),
        })?;
        let mut vad = SileroVad {
            plan,
            window: vec![0.0; CONTEXT + Self::FRAME],
            state: vec![0.0; STATE_LEN],
        };
        // A graph that loads but cannot run (wrong weights, wrong shapes) fails here, at load,
        // rather than on the first encounter.
        vad.frame_probability(&[0.0; Self::FRAME])?;
        vad.reset();
        Ok(vad)
    }

    pub fn reset(&mut self) {
        self.window.fill(0.0);
        self.state.fill(0.0);
    }

    /// Speech probability of one 512-sample frame of 16 kHz audio, continuing from the frames
    /// before it (recurrent state and 64-sample context are kept).
    pub fn frame_probability(&mut self, frame: &[f32]) -> Result<f32, SileroError> {
        if frame.len() != Self::FRAME {
            return Err(SileroError::FrameLength {
                expected: Self::FRAME,
                got: frame.len(),
            });
        }
        self.window[CONTEXT..].copy_from_slice(frame);
        let input =
            Tensor::from_shape(&[1, CONTEXT + Self::FRAME], &self.window).map_err(inference)?;
        let state = Tensor::from_shape(&[2, 1, 128], &self.state).map_err(inference)?;
        let outputs = self
            .plan
            .run(tvec![input.into(), state.into()])
            .map_err(inference)?;
        let (Some(prob), Some(next_state)) = (outputs.first(), outputs.get(1)) else {
            return Err(SileroError::Inference(
                "the model returned too few outputs".into(),
            ));
        };
        let prob = prob
            .to_plain_array_view::<f32>()
            .map_err(inference)?
            .iter()
            .next()
            .copied()
            .ok_or_else(|| SileroError::Inference("empty probability output".into()))?;
        let next_state = next_state.to_plain_array_view::<f32>().map_err(inference)?;
        if next_state.len() != STATE_LEN {
            return Err(SileroError::Inference(format!(
                "state output holds {} values, expected {STATE_LEN}",
                next_state.len()
            )));
        }
        for (dst, src) in self.state.iter_mut().zip(next_state.iter()) {
            *dst = *src;
        }
        self.window.copy_within(Self::FRAME.., 0);
        Ok(prob)
    }

    fn padded_frame_probability(&mut self, chunk: &[f32]) -> Result<f32, SileroError> {
        if chunk.len() == Self::FRAME {
            return self.frame_probability(chunk);
        }
        let mut padded = [0.0f32; Self::FRAME];
        let used = chunk.len().min(Self::FRAME);
        padded[..used].copy_from_slice(&chunk[..used]);
        self.frame_probability(&padded)
    }

    /// One probability per 512-sample frame of the whole signal, from a fresh state; the last
    /// partial frame is zero-padded.
    pub fn probabilities(&mut self, samples: &[f32]) -> Result<Vec<f32>, SileroError> {
        self.reset();
        let mut probs = Vec::with_capacity(samples.len().div_ceil(Self::FRAME));
        for chunk in samples.chunks(Self::FRAME) {
            probs.push(self.padded_frame_probability(chunk)?);
        }
        Ok(probs)
    }

    /// webrtc-vad as the cheap first gate: Silero runs only where webrtc-vad (least aggressive
    /// mode) heard something in the frame or the preceding ~300 ms; elsewhere the probability is
    /// 0. Returns probs and how many frames Silero actually ran.
    pub fn gated_probabilities(
        &mut self,
        samples: &[f32],
    ) -> Result<(Vec<f32>, usize), SileroError> {
        let mut gate = VoicedGate::new(0);
        gate.push(samples);
        let mut stream = GatedStream::default();
        self.reset();
        let probs = (0..samples.len().div_ceil(Self::FRAME))
            .map(|index| self.gated_frame(samples, index, &gate, &mut stream))
            .collect::<Result<Vec<f32>, SileroError>>()?;
        Ok((probs, stream.ran))
    }

    /// The gated probability of frame `index` of a stream: `signal` holds the stream up to at
    /// least that frame's end, `gate` its webrtc-vad decisions (quality mode) so far, `stream`
    /// what this model has seen of it. Frames must be asked for in order.
    pub fn gated_frame(
        &mut self,
        signal: &[f32],
        index: usize,
        gate: &VoicedGate,
        stream: &mut GatedStream,
    ) -> Result<f32, SileroError> {
        let start = index * Self::FRAME;
        let end = (start + Self::FRAME).min(signal.len());
        if start >= end || !gate.between(start.saturating_sub(GATE_HANGOVER), end) {
            return Ok(0.0);
        }
        if stream.next_unseen < index {
            // Silero judges speech against the background it has heard: from a state that
            // missed the last stretch its first frames come out far too low. A short pre-roll
            // over the skipped audio lets it re-adapt; those frames stay 0.
            let from = stream
                .next_unseen
                .max(index.saturating_sub(GATE_PREROLL_FRAMES));
            let context_start = (from * Self::FRAME).saturating_sub(CONTEXT);
            let context = &signal[context_start..from * Self::FRAME];
            self.window[..CONTEXT - context.len()].fill(0.0);
            self.window[CONTEXT - context.len()..CONTEXT].copy_from_slice(context);
            for skipped in from..index {
                let at = skipped * Self::FRAME;
                self.frame_probability(&signal[at..at + Self::FRAME])?;
                stream.ran += 1;
            }
        }
        stream.next_unseen = index + 1;
        stream.ran += 1;
        self.padded_frame_probability(&signal[start..end])
    }
}

/// What a Silero instance has seen of the stream it is gating: the next frame its state has
/// not seen, and how many frames it ran (pre-roll included).
#[derive(Debug, Clone, Copy, Default)]
pub struct GatedStream {
    pub next_unseen: usize,
    pub ran: usize,
}

fn inference(e: impl std::fmt::Display) -> SileroError {
    SileroError::Inference(e.to_string())
}

/// Rewrites the top-level graph so that it computes the 16 kHz network only: the `If` on
/// `sr == 16000` is replaced by its then-branch, and `sr` (now unused) is dropped.
fn select_16k(graph: &mut pb::GraphProto) -> Result<(), String> {
    let constants: Vec<(String, Option<i64>)> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .flat_map(|n| {
            let value = n
                .attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref())
                .and_then(scalar_i64);
            n.output.iter().map(move |o| (o.clone(), value))
        })
        .collect();
    let sr_tests: Vec<(String, bool)> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Equal" && n.input.iter().any(|i| i == "sr"))
        .filter_map(|n| {
            let other = n.input.iter().find(|i| *i != "sr")?;
            let value = constants.iter().find(|(name, _)| name == other)?.1?;
            Some((n.output.first()?.clone(), value == SR_16K))
        })
        .collect();
    let inlined = inline_ifs(graph, |node| {
        let condition = node.input.first()?;
        sr_tests
            .iter()
            .find(|(name, _)| name == condition)
            .map(|(_, is_16k)| *is_16k)
    })?;
    if inlined == 0 {
        return Err("no If on sr == 16000 found".into());
    }
    prune_dead(graph);
    Ok(())
}

/// Replaces each top-level `If` that `decide` settles by the nodes of the chosen branch (its
/// initializers kept, its outputs renamed to the If's through Identity nodes). Ifs inside the
/// chosen branch surface at the top level and are settled by a later call. Returns how many
/// were replaced.
fn inline_ifs(
    graph: &mut pb::GraphProto,
    decide: impl Fn(&pb::NodeProto) -> Option<bool>,
) -> Result<usize, String> {
    let nodes = std::mem::take(&mut graph.node);
    let mut rewritten = Vec::with_capacity(nodes.len());
    let mut inlined = 0usize;
    for node in nodes {
        let choice = if node.op_type == "If" {
            decide(&node)
        } else {
            None
        };
        let Some(then) = choice else {
            rewritten.push(node);
            continue;
        };
        let branch_name = if then { "then_branch" } else { "else_branch" };
        let Some(branch) = node
            .attribute
            .iter()
            .find(|a| a.name == branch_name)
            .and_then(|a| a.g.clone())
        else {
            graph.node = rewritten;
            return Err(format!("If {} has no {branch_name}", node.name));
        };
        if branch.output.len() != node.output.len() {
            graph.node = rewritten;
            return Err(format!(
                "If {} has {} outputs, its {branch_name} {}",
                node.name,
                node.output.len(),
                branch.output.len()
            ));
        }
        graph.initializer.extend(branch.initializer);
        rewritten.extend(branch.node);
        // Identities keep the If's output names, so nothing downstream needs renaming.
        for (from, to) in branch.output.iter().zip(&node.output) {
            rewritten.push(pb::NodeProto {
                input: vec![from.name.clone()],
                output: vec![to.clone()],
                name: format!("{}__{to}", node.name),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        inlined += 1;
    }
    graph.node = rewritten;
    Ok(inlined)
}

/// The remaining Ifs test shapes (is the time axis 1? is there a state?). With the input shapes
/// fixed, tract's own shape inference settles each condition; the chosen branch is inlined and
/// the Ifs it held are settled on the next pass. tract cannot type these Ifs itself because
/// their two branches disagree on shapes.
fn fold_shape_ifs(proto: &mut pb::ModelProto) -> TractResult<()> {
    const MAX_DEPTH: usize = 16;
    for _ in 0..MAX_DEPTH {
        let has_if = proto
            .graph
            .as_ref()
            .is_some_and(|g| g.node.iter().any(|n| n.op_type == "If"));
        if !has_if {
            return Ok(());
        }
        let mut model = onnx().model_for_proto_model(proto)?;
        set_input_facts(&mut model)?;
        model.analyse(false)?;
        let mut decisions: HashMap<String, bool> = HashMap::new();
        for node in model.nodes() {
            if node.op.name() != "If" {
                continue;
            }
            let Some(condition) = node.inputs.first() else {
                continue;
            };
            if let Some(value) = model.outlet_fact(*condition)?.value.concretize() {
                decisions.insert(node.name.clone(), value.cast_to_scalar::<bool>()?);
            }
        }
        let graph = proto
            .graph
            .as_mut()
            .ok_or_else(|| TractError::msg("the model lost its graph"))?;
        let inlined =
            inline_ifs(graph, |n| decisions.get(&n.name).copied()).map_err(TractError::msg)?;
        if inlined == 0 {
            return Err(TractError::msg(
                "an If condition does not follow from the input shapes",
            ));
        }
    }
    Err(TractError::msg("If nodes nested deeper than expected"))
}

fn scalar_i64(t: &pb::TensorProto) -> Option<i64> {
    const INT64: i32 = 7;
    if t.data_type != INT64 {
        return None;
    }
    if let Some(v) = t.int64_data.first() {
        return Some(*v);
    }
    let bytes: [u8; 8] = t.raw_data.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(bytes))
}

/// Every value name a node reads, including those its subgraphs read from the enclosing scope.
fn reads(node: &pb::NodeProto, out: &mut Vec<String>) {
    out.extend(node.input.iter().filter(|i| !i.is_empty()).cloned());
    for attr in &node.attribute {
        for sub in attr.g.iter().chain(attr.graphs.iter()) {
            for inner in &sub.node {
                reads(inner, out);
            }
            out.extend(sub.output.iter().map(|o| o.name.clone()));
        }
    }
}

/// Drops nodes whose outputs nobody reads (the old `sr` test), then graph inputs nobody reads
/// (`sr` itself), so tract is not asked for a fact about an input that no longer matters.
fn prune_dead(graph: &mut pb::GraphProto) {
    loop {
        let mut used: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        for node in &graph.node {
            reads(node, &mut used);
        }
        let used: std::collections::HashSet<String> = used.into_iter().collect();
        let before = graph.node.len();
        graph
            .node
            .retain(|n| n.output.iter().any(|o| used.contains(o)));
        if graph.node.len() == before {
            graph.input.retain(|i| used.contains(&i.name));
            return;
        }
    }
}

fn set_input_facts(model: &mut InferenceModel) -> TractResult<()> {
    let names: Vec<String> = model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    if names != ["input", "state"] {
        return Err(TractError::msg(format!(
            "model inputs are {names:?}, expected [input, state]"
        )));
    }
    model.set_input_fact(0, f32::fact([1, CONTEXT + SileroVad::FRAME]).into())?;
    model.set_input_fact(1, f32::fact([2, 1, 128]).into())?;
    Ok(())
}

fn prepare(proto: &mut pb::ModelProto) -> TractResult<Plan> {
    fold_shape_ifs(proto)?;
    let mut model = onnx().model_for_proto_model(proto)?;
    set_input_facts(&mut model)?;
    model.into_optimized()?.into_runnable()
}

/// Settings that turn frame probabilities into speech intervals.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechSettings {
    /// A frame at or above this opens speech.
    pub threshold: f32,
    /// Speech closes only after frames fall below this (hysteresis against flicker).
    pub negative_threshold: f32,
    /// Shorter intervals are dropped.
    pub min_speech_ms: u32,
    /// Pauses shorter than this do not close an interval.
    pub min_silence_ms: u32,
    /// Added at both ends (never overlapping a neighbour nor leaving the audio).
    pub pad_ms: u32,
}

impl Default for SpeechSettings {
    /// Tuned on simulated exam rooms (fan noise at 0 and 5 dB SNR, RT60 0.4 s, mic 0 and the
    /// channel mean): a higher threshold and no padding keep the reverberant tails after each
    /// turn out, which is most of what a looser setting claims wrongly; a 200 ms pause still
    /// bridges the breaks inside a sentence.
    fn default() -> Self {
        SpeechSettings {
            threshold: 0.6,
            negative_threshold: 0.5,
            min_speech_ms: 250,
            min_silence_ms: 200,
            pad_ms: 0,
        }
    }
}

fn ms_to_samples(ms: u32) -> usize {
    ms as usize * SAMPLE_RATE / 1000
}

/// Hysteresis + min durations + padding → speech intervals in samples [start, end).
pub fn speech_intervals(probs: &[f32], settings: &SpeechSettings) -> Vec<(usize, usize)> {
    let frame = SileroVad::FRAME;
    let total = probs.len() * frame;
    let min_speech = ms_to_samples(settings.min_speech_ms);
    let min_silence = ms_to_samples(settings.min_silence_ms);
    let pad = ms_to_samples(settings.pad_ms);

    let mut raw: Vec<(usize, usize)> = Vec::new();
    let mut start: Option<usize> = None;
    // Where the current pause began, while one is being timed.
    let mut pause: Option<usize> = None;
    for (index, &p) in probs.iter().enumerate() {
        let at = index * frame;
        if p >= settings.threshold {
            pause = None;
            if start.is_none() {
                start = Some(at);
            }
            continue;
        }
        let Some(open) = start else { continue };
        if p >= settings.negative_threshold {
            continue;
        }
        let began = *pause.get_or_insert(at);
        if at + frame - began >= min_silence {
            if began - open >= min_speech {
                raw.push((open, began));
            }
            start = None;
            pause = None;
        }
    }
    if let Some(open) = start {
        let end = pause.unwrap_or(total);
        if end - open >= min_speech {
            raw.push((open, end));
        }
    }

    let mut out: Vec<(usize, usize)> = Vec::with_capacity(raw.len());
    for (i, &(s, e)) in raw.iter().enumerate() {
        // A gap narrower than two pads is shared at its middle, so padded intervals never overlap.
        let mut start = s.saturating_sub(pad);
        if let Some(&(_, prev_end)) = i.checked_sub(1).and_then(|p| raw.get(p)) {
            start = start.max(prev_end + (s - prev_end) / 2);
        }
        let mut end = (e + pad).min(total);
        if let Some(&(next_start, _)) = raw.get(i + 1) {
            end = end.min(e + (next_start - e) / 2);
        }
        if end > start {
            out.push((start, end));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(pattern: &str) -> Vec<f32> {
        // '#' = 0.9 (speech), '~' = 0.4 (between the thresholds), '.' = 0.05.
        pattern
            .chars()
            .map(|c| match c {
                '#' => 0.9,
                '~' => 0.4,
                _ => 0.05,
            })
            .collect()
    }

    fn plain() -> SpeechSettings {
        SpeechSettings {
            threshold: 0.5,
            negative_threshold: 0.35,
            min_speech_ms: 100,
            min_silence_ms: 100,
            pad_ms: 0,
        }
    }

    const F: usize = SileroVad::FRAME;

    #[test]
    fn hysteresis_keeps_speech_through_middling_frames() {
        let probs = frames("..####~~~~###.......");
        assert_eq!(speech_intervals(&probs, &plain()), vec![(2 * F, 13 * F)]);
    }

    #[test]
    fn short_pauses_bridge_and_long_ones_split() {
        // 100 ms = 3.125 frames: a 2-frame pause is bridged, a 6-frame pause splits.
        let probs = frames("..####..####......####..");
        assert_eq!(
            speech_intervals(&probs, &plain()),
            vec![(2 * F, 12 * F), (18 * F, 22 * F)]
        );
    }

    #[test]
    fn blips_shorter_than_min_speech_are_dropped() {
        let probs = frames("..#..........##.......");
        assert!(speech_intervals(&probs, &plain()).is_empty());
    }

    #[test]
    fn padding_stays_inside_the_audio_and_between_neighbours() {
        let mut s = plain();
        s.pad_ms = 100;
        let probs = frames("####.......####");
        let out = speech_intervals(&probs, &s);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, 0);
        assert!(out[0].1 <= out[1].0);
        assert_eq!(out[1].1, probs.len() * F);
        assert_eq!(out[0].1, 4 * F + ms_to_samples(100));
    }

    #[test]
    fn speech_running_to_the_end_is_closed() {
        let probs = frames("......######");
        assert_eq!(speech_intervals(&probs, &plain()), vec![(6 * F, 12 * F)]);
    }

    #[test]
    fn silero_vad_is_send() {
        fn send<T: Send>() {}
        send::<SileroVad>();
    }
}
