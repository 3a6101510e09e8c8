"""Audio helpers shared by ShapesWorld speech and user data: resampling and reading files.

Everything is 16 kHz mono float32 in [-1, 1] once it leaves here (``TARGET_RATE``).
"""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile

TARGET_RATE = 16_000


def resample(wave: np.ndarray, rate_in: int, rate_out: int = TARGET_RATE) -> np.ndarray:
    """Band-limited resampling of a mono signal by zero-padding/truncating its spectrum (FFT method).

    Exact for periodic signals; speech clips start and end in silence, so the periodic wrap-around
    that the FFT assumes costs nothing audible. Returns float32 of length round(n * out / in).
    """
    wave = np.asarray(wave, dtype=np.float32)
    if rate_in == rate_out or wave.size == 0:
        return wave
    n_true = wave.shape[0]
    # Pad with silence to a length whose FFT is fast (5-smooth) and that maps to a whole number of
    # output samples; an arbitrary length (e.g. 2*2*3*19*331) makes the FFT ~10x slower.
    step = rate_in // math.gcd(rate_in, rate_out)
    n_in = step * _next_smooth(-(-n_true // step))
    wave = np.pad(wave, (0, n_in - n_true))
    n_out = n_in * rate_out // rate_in
    spectrum = np.fft.rfft(wave)
    keep = n_out // 2 + 1
    if keep <= spectrum.shape[0]:
        spectrum = spectrum[:keep]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(keep - spectrum.shape[0], dtype=spectrum.dtype)])
    out = np.fft.irfft(spectrum, n_out) * (n_out / n_in)
    return out[: int(round(n_true * rate_out / rate_in))].astype(np.float32)


def _next_smooth(n: int) -> int:
    """Smallest m >= n whose only prime factors are 2, 3 and 5."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def to_mono(wave: np.ndarray) -> np.ndarray:
    """(N,) or (N, channels) -> (N,) by averaging channels."""
    return wave.mean(axis=1) if wave.ndim == 2 else wave


def read_audio(source: str | bytes, rate: int = TARGET_RATE) -> np.ndarray:
    """Read a wav/flac/ogg file (path or bytes) as mono float32 at ``rate``. Raises on corrupt input."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    wave, rate_in = soundfile.read(handle, dtype="float32", always_2d=False)
    if wave.size == 0:
        raise ValueError("audio file holds no samples")
    return resample(to_mono(wave), int(rate_in), rate)


def encode_audio(wave: np.ndarray, rate: int = TARGET_RATE, fmt: str = "FLAC") -> bytes:
    """Encode mono float32 audio to bytes (FLAC by default: lossless and compact) for shards."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(wave, -1.0, 1.0), rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()
