#!/bin/sh
# Prints what `make install ACCEL=auto` installs JAX for: cuda13 or cuda12 where nvidia-smi
# finds a GPU (CUDA 13 needs an NVIDIA driver >= 580), tpu on a Cloud TPU VM (TPU devices under
# /dev/accel* or /dev/vfio with TPU metadata in the environment), else cpu.
if command -v nvidia-smi >/dev/null 2>&1; then
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
  major=${driver%%.*}
  if [ -n "$major" ] && [ "$major" -ge 580 ] 2>/dev/null; then echo cuda13; exit; fi
  if [ -n "$major" ]; then echo cuda12; exit; fi
fi
if ls /dev/accel0 >/dev/null 2>&1 || { [ -d /dev/vfio ] && [ -n "${TPU_ACCELERATOR_TYPE:-}${TPU_NAME:-}" ]; }; then
  echo tpu; exit
fi
echo cpu
