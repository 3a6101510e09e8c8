"""Audio features: log-mel spectrograms in pure torch (no torchaudio), and the ``AudioSpec`` they follow.

A model that consumes audio stores its ``AudioSpec`` (``to_dict``) and checks it on load with
``spec.check_compatible(other)``: features computed with another sample rate, hop or number of mel
bands would be silently wrong, so a mismatch raises a one-line ``UmmError`` naming the field.

Shapes: a wave (N,) or (B, N) at ``spec.sample_rate`` -> ``pad_or_trim`` -> (…, clip_samples) ->
``log_mel`` -> (…, n_mels, frames) with ``frames = clip_samples // hop + 1`` (centred STFT).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from umm import UmmError
from umm.registry import TOKENIZERS


@dataclass(frozen=True)
class AudioSpec:
    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 400  # 25 ms window
    hop: int = 160  # 10 ms hop -> 100 frames per second
    clip_seconds: float = 2.0  # waves are padded/trimmed to this length
    f_min: float = 0.0
    f_max: float = 8000.0  # Nyquist at 16 kHz
    log_floor: float = 1e-5  # added before the log so silence stays finite

    def __post_init__(self) -> None:
        if self.f_max > self.sample_rate / 2 or not 0 <= self.f_min < self.f_max:
            raise UmmError(f"audio spec needs 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}")
        if self.hop <= 0 or self.n_fft <= 0 or self.n_mels <= 0 or self.clip_seconds <= 0:
            raise UmmError(f"audio spec sizes must be positive: {self}")

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        return self.clip_samples // self.hop + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AudioSpec":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise UmmError(f"unknown audio spec fields {sorted(unknown)}")
        return cls(**data)

    def check_compatible(self, other: "AudioSpec") -> None:
        """Raise a one-line UmmError naming the first field where ``other`` differs from this spec."""
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                raise UmmError(f"audio spec mismatch: {f.name} is {mine} for the model but {theirs} here")


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(spec: AudioSpec) -> torch.Tensor:
    """Triangular filters (n_mels, n_fft // 2 + 1), equally spaced on the mel scale, each of unit area
    (Slaney normalisation) so wide high-frequency bands do not dominate."""
    n_freqs = spec.n_fft // 2 + 1
    freqs = torch.linspace(0.0, spec.sample_rate / 2, n_freqs, dtype=torch.float64)
    mels = torch.linspace(hz_to_mel(torch.tensor(spec.f_min)), hz_to_mel(torch.tensor(spec.f_max)), spec.n_mels + 2, dtype=torch.float64)
    edges = mel_to_hz(mels)  # (n_mels + 2,) lower, centre, upper of every band
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    bank = torch.clamp(torch.minimum(rising, falling), min=0.0)
    bank = bank * (2.0 / (upper - lower))
    return bank.float()


def pad_or_trim(wave: torch.Tensor, spec: AudioSpec) -> torch.Tensor:
    """(…, N) -> (…, clip_samples): zero-pad at the end or cut."""
    n = spec.clip_samples
    if wave.shape[-1] >= n:
        return wave[..., :n]
    return torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))


class LogMel(torch.nn.Module):
    """Wave (…, N) -> log-mel (…, n_mels, N // hop + 1); the filterbank and window are buffers."""

    def __init__(self, spec: AudioSpec = AudioSpec()):
        super().__init__()
        self.spec = spec
        self.register_buffer("window", torch.hann_window(spec.n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(spec), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        shape = wave.shape[:-1]
        flat = wave.reshape(-1, wave.shape[-1]).float()
        stft = torch.stft(
            flat, self.spec.n_fft, self.spec.hop, window=self.window, center=True, pad_mode="reflect", return_complex=True
        )  # (B, n_fft // 2 + 1, frames)
        power = stft.real**2 + stft.imag**2
        mel = self.filters @ power  # (B, n_mels, frames)
        out = torch.log(mel + self.spec.log_floor)
        return out.reshape(*shape, *out.shape[-2:])


TOKENIZERS.register("logmel")(LogMel)


def log_mel(wave: torch.Tensor, spec: AudioSpec = AudioSpec(), clip: bool = True) -> torch.Tensor:
    """Log-mel features of ``wave`` (…, N); with ``clip`` the wave is first padded/trimmed to the spec's
    clip length, so every output has ``spec.frames`` frames."""
    if clip:
        wave = pad_or_trim(wave, spec)
    return _cached_logmel(spec)(wave)


_LOGMELS: dict[AudioSpec, LogMel] = {}


def _cached_logmel(spec: AudioSpec) -> LogMel:
    if spec not in _LOGMELS:
        _LOGMELS[spec] = LogMel(spec)
    return _LOGMELS[spec]
