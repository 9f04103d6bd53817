#!/usr/bin/env bash
# The whole product on one machine, with no downloads: build both images, fine-tune the
# ImageNet-pretrained EfficientNet-Lite0 on a generated sample (or DEMO_DATA), serve the
# model, and classify a held-out picture of each class.
#   scripts/demo.sh                         (make demo)
#   DEMO_DATA=path/to/dogImages DEMO_HP="epochs=5" scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

data=${DEMO_DATA:-build/sample}
# The course's recipe on a backbone that knows ImageNet, with nothing downloaded but packages:
# EfficientNet-Lite0's weights come with the training image. Frozen trunk, new head, cached
# features, at the network's real input size (224 px).
hp=${DEMO_HP:-"arch=efficientnet_lite0 pretrained=imagenet freeze=all epochs=5 patience=2 batch_size=32 lr=0.001"}
port=${DEMO_PORT:-8080}
opt_ml=${OPT_ML:-build/opt_ml}
name=dogbreed-demo-serve

step() { printf '\n==> %s\n' "$*"; }

step "building the images"
make --no-print-directory build

if [ -z "${DEMO_DATA:-}" ] && [ ! -d "$data/train" ]; then
    step "generating the sample data set in $data"
    make --no-print-directory sample SAMPLE="$data"
fi

step "training in the container ($hp)"
make --no-print-directory train-local DATA="$data" HP="$hp" OPT_ML="$opt_ml"

python3 - "$opt_ml/model/model.json" <<'PY'
import json, sys
metrics = json.load(open(sys.argv[1]))["metrics"]
print("final metrics:", "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
PY

step "serving $opt_ml/model on localhost:$port"
docker rm -f "$name" >/dev/null 2>&1 || true
docker run -d --name "$name" -p "127.0.0.1:$port:8080" -v "$(realpath "$opt_ml")/model:/opt/ml/model:ro" \
    dogbreed-serve:latest serve >/dev/null
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/ping" >/dev/null && break
    sleep 1
done
curl -sf "http://127.0.0.1:$port/ping" >/dev/null || { docker logs "$name" | tail -30; echo "the endpoint never became healthy" >&2; exit 1; }

# One held-out picture of each class: the endpoint answers with class names.
for class_dir in $(find "$data/test" -mindepth 1 -maxdepth 1 -type d | sort); do
    picture=$(find "$class_dir" -type f -name '*.jpg' | sort | sed -n '1p')
    [ -n "$picture" ] || continue
    step "curl -H 'Content-Type: image/jpeg' --data-binary @$picture http://localhost:$port/invocations"
    curl -sS -H "Content-Type: image/jpeg" --data-binary "@$picture" "http://127.0.0.1:$port/invocations"
    echo
    echo "(true class: $(basename "$class_dir"))"
done

# Why: the last picture with its class activation map drawn over it, as the endpoint draws it.
overlay="$opt_ml/overlay.png"
step "curl -H 'Accept: image/png' -H 'Content-Type: image/jpeg' --data-binary @$picture -o $overlay http://localhost:$port/invocations"
curl -sSf -H "Accept: image/png" -H "Content-Type: image/jpeg" --data-binary "@$picture" -o "$overlay" \
    "http://127.0.0.1:$port/invocations"
echo "the picture with the map of what the model looked at: $overlay; the job's own maps of test photos: $opt_ml/output/data/report.html"
step "done: 'docker compose up serve' serves this model again on localhost:8080"
