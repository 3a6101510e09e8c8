"""Log-mel features and the AudioSpec compatibility check."""

import math

import pytest
import torch

from umm import UmmError
from umm.data.shapes import ShapesWorld
from umm.registry import TOKENIZERS
from umm.tokenizers.audio import AudioSpec, LogMel, hz_to_mel, log_mel, mel_filterbank, mel_to_hz, pad_or_trim


def test_mel_shape_and_clip_length():
    spec = AudioSpec()
    assert spec.clip_samples == 32000 and spec.frames == 201
    assert log_mel(torch.randn(12345), spec).shape == (64, 201)
    assert log_mel(torch.randn(3, 50000), spec).shape == (3, 64, 201)
    assert log_mel(torch.randn(2, 1600), spec, clip=False).shape == (2, 64, 11)
    small = AudioSpec(n_mels=40, hop=320, clip_seconds=1.0)
    assert log_mel(torch.randn(16000), small).shape == (40, small.frames) == (40, 51)
    assert TOKENIZERS.get("logmel") is LogMel


def test_pad_or_trim():
    spec = AudioSpec(clip_seconds=0.5)
    assert pad_or_trim(torch.ones(100), spec).shape == (8000,) and pad_or_trim(torch.ones(100), spec)[100:].abs().sum() == 0
    assert torch.equal(pad_or_trim(torch.arange(9000.0), spec), torch.arange(8000.0))


def test_filterbank_is_triangular_and_mel_spaced():
    spec = AudioSpec()
    bank = mel_filterbank(spec)
    assert bank.shape == (64, 201) and (bank >= 0).all()
    assert (bank.sum(1) > 0).all()  # no empty band at n_fft=400
    peaks = bank.argmax(1)
    assert (peaks[1:] >= peaks[:-1]).all()
    assert torch.allclose(mel_to_hz(hz_to_mel(torch.tensor([0.0, 440.0, 8000.0]))), torch.tensor([0.0, 440.0, 8000.0]), atol=1e-2)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 4000.0])
def test_a_pure_tone_lights_the_band_of_its_frequency(freq):
    spec = AudioSpec()
    t = torch.arange(spec.clip_samples) / spec.sample_rate
    feats = log_mel(torch.sin(2 * math.pi * freq * t), spec)
    band = int(feats[:, 50:150].mean(1).argmax())
    centres = mel_to_hz(torch.linspace(hz_to_mel(torch.tensor(0.0)), hz_to_mel(torch.tensor(8000.0)), 66))[1:-1]
    assert abs(float(centres[band]) - freq) < 0.15 * freq + 60
    assert float(log_mel(torch.zeros(100), spec).max()) == pytest.approx(math.log(spec.log_floor))


def test_spec_mismatch_names_the_field_in_one_line():
    spec = AudioSpec()
    spec.check_compatible(AudioSpec.from_dict(spec.to_dict()))
    with pytest.raises(UmmError, match="n_mels is 64 for the model but 80 here") as err:
        spec.check_compatible(AudioSpec(n_mels=80))
    assert "\n" not in str(err.value)
    with pytest.raises(UmmError, match="hop"):
        spec.check_compatible(AudioSpec(hop=320))
    with pytest.raises(UmmError, match="unknown audio spec fields"):
        AudioSpec.from_dict({"sample_rate": 16000, "n_mel": 64})
    with pytest.raises(UmmError, match="f_max"):
        AudioSpec(sample_rate=8000)  # Nyquist 4 kHz < default f_max


def test_world_speech_features_are_finite_and_speech_like():
    spec = AudioSpec(clip_seconds=10.0)  # longer than any caption, so silence follows the speech
    s = ShapesWorld("train", modalities=("audio",))[0]
    feats = log_mel(s["audio"], spec)
    assert torch.isfinite(feats).all()
    spoken = s["audio"].shape[0] // spec.hop
    assert feats[:, :spoken].mean() > feats[:, spoken + 5 :].mean() + 3
