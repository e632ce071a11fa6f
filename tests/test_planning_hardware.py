import dataclasses
import importlib.util
import os
from types import SimpleNamespace

import pytest
import torch

from hf_mistral_kit import Hardware
from hf_mistral_kit.planning.hardware import PROFILES

MiB = 2**20


@pytest.mark.parametrize(
    "name, device_name, capability, total_mib, bf16",
    [
        ("t4", "Tesla T4", (7, 5), 15360, False),
        ("a10g", "NVIDIA A10G", (8, 6), 23028, True),
        ("l4", "NVIDIA L4", (8, 9), 23034, True),
        ("a100-40gb", "NVIDIA A100-SXM4-40GB", (8, 0), 40960, True),
        ("a100-80gb", "NVIDIA A100-SXM4-80GB", (8, 0), 81920, True),
        ("h100", "NVIDIA H100 80GB HBM3", (9, 0), 81559, True),
        ("rtx4090", "NVIDIA GeForce RTX 4090", (8, 9), 24564, True),
    ],
)
def test_gpu_profiles(name, device_name, capability, total_mib, bf16):
    hw = Hardware.profile(name)
    assert hw.cuda and hw.device_name == device_name and hw.compute_capability == capability
    assert hw.total_memory == total_mib * MiB
    assert hw.free_memory == hw.total_memory - 512 * MiB  # the CUDA context
    assert hw.bf16 is bf16 and hw.is_ampere_or_newer is bf16
    assert hw.flash_attn and hw.bitsandbytes  # profiles assume both packages are installed
    assert hw.memory_bandwidth > 0


def test_cpu_profile():
    hw = Hardware.profile("cpu")
    assert not hw.cuda and hw.compute_capability is None
    assert not hw.bf16 and not hw.cpu_bf16 and not hw.flash_attn and hw.bitsandbytes
    assert hw.free_memory == hw.cpu_memory == 32 * 2**30


def test_profile_overrides_are_plain_data():
    hw = Hardware.profile("a100-80gb", flash_attn=False, free_memory=10 * 2**30)
    assert not hw.flash_attn and hw.free_memory == 10 * 2**30
    assert PROFILES["a100-80gb"].flash_attn  # the shared profile is untouched
    assert dataclasses.replace(Hardware.profile("t4"), bitsandbytes=False) == Hardware.profile("t4", bitsandbytes=False)


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown hardware profile 'v100'; choose one of t4, a10g, .*cpu"):
        Hardware.profile("v100")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only detection path")
def test_detect_on_this_cpu_machine():
    hw = Hardware.detect()
    assert not hw.cuda and hw.compute_capability is None
    assert hw.total_memory == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < hw.free_memory <= hw.total_memory
    assert hw.flash_attn is (importlib.util.find_spec("flash_attn") is not None)
    assert hw.bitsandbytes is (importlib.util.find_spec("bitsandbytes") is not None)
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    assert hw.cpu_bf16 is ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert hw.bf16 is hw.cpu_bf16


def test_detect_takes_bf16_from_compute_capability_not_is_bf16_supported(monkeypatch):
    """On a T4, torch.cuda.is_bf16_supported() has answered True (emulation); detect() must say no bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda index: SimpleNamespace(name="Tesla T4", major=7, minor=5)
    )
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (15 * 2**30, 15360 * MiB))
    hw = Hardware.detect()
    assert hw.cuda and hw.compute_capability == (7, 5) and hw.bf16 is False
    assert hw.total_memory == 15360 * MiB and hw.free_memory == 15 * 2**30
    assert hw.memory_bandwidth == 320e9
    assert hw.describe() == "Tesla T4 (compute capability 7.5, 15.0 GiB free)"
