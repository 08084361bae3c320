#!/usr/bin/env bash
# Rebuilds the Python reference venv (pinned versions) and regenerates every fixture offline.
# About 3 GB of download and a 6 GB venv the first time (torch from PyPI brings CUDA wheels; it runs
# on the CPU). CI never runs this: it reads the committed fixtures.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet -r "$here/requirements.txt"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0
cd "$here"
for script in gen_tokenizers.py gen_text_encoders.py gen_unet.py gen_vae.py gen_single_file.py gen_schedulers.py gen_pipeline.py gen_rewards.py gen_clip.py gen_open_clip.py gen_data.py gen_webdataset.py gen_journeydb.py gen_parquet.py gen_lora.py gen_photo_sample.py; do
  echo "== $script"
  "$venv/bin/python" "$script"
done
# ImageReward needs transformers 4.x and timm 0.6.13: its own venv.
ir_venv="$here/.venv-imagereward"
if [ ! -x "$ir_venv/bin/python" ]; then
  python3 -m venv "$ir_venv"
fi
"$ir_venv/bin/pip" install --quiet -r "$here/requirements-imagereward.txt"
echo "== gen_image_reward.py"
"$ir_venv/bin/python" gen_image_reward.py
du -sh "$here/../../tests/fixtures" "$here/../../assets"
