//! Deterministic test scenes for the front end: white noise from a small xorshift generator
//! (no rand crate, same numbers on every machine) and exact fractional delays.

use realfft::num_complex::Complex;
use realfft::RealFftPlanner;

/// Sample rate of every test scene.
pub const FS: f32 = 16_000.0;
/// Speed of sound, m/s.
pub const C: f32 = 343.0;

/// xorshift64*: tiny, deterministic, good enough for test noise.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn gauss(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    pub fn white(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.gauss()).collect()
    }
}

/// `x` delayed by `delay` samples (fractional), circularly: a phase shift of the whole signal's
/// spectrum, which is the exact band-limited delay of the periodic signal. The Nyquist bin
/// cannot carry a fractional phase in a real signal and is dropped.
pub fn delayed(x: &[f32], delay: f64) -> Vec<f32> {
    let n = x.len();
    let mut planner = RealFftPlanner::<f32>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut buf = x.to_vec();
    let mut spec = fwd.make_output_vec();
    fwd.process(&mut buf, &mut spec).unwrap();
    for (k, bin) in spec.iter_mut().enumerate() {
        let phase = -2.0 * std::f64::consts::PI * k as f64 * delay / n as f64;
        *bin *= Complex::new(phase.cos() as f32, phase.sin() as f32);
    }
    if n.is_multiple_of(2) {
        spec[n / 2] = Complex::new(0.0, 0.0);
    }
    spec[0].im = 0.0;
    inv.process(&mut spec, &mut buf).unwrap();
    buf.iter_mut().for_each(|v| *v /= n as f32);
    buf
}

/// Arrival delays in samples, relative to mic 0, of a far-field source at `angle_deg` from
/// broadside on a uniform linear array.
pub fn ula_delays(mics: usize, spacing_m: f32, angle_deg: f32) -> Vec<f32> {
    let per_mic = spacing_m * angle_deg.to_radians().sin() / C * FS;
    (0..mics).map(|m| m as f32 * per_mic).collect()
}

/// The source as heard at each mic of the array.
pub fn at_mics(source: &[f32], delays: &[f32]) -> Vec<Vec<f32>> {
    delays
        .iter()
        .map(|&d| delayed(source, f64::from(d)))
        .collect()
}
