#!/bin/bash
# byoc ec2-train's user data: one training job on this instance, then shut down. The instance is
# launched with InstanceInitiatedShutdownBehavior=terminate, so shutting down ends its bill.
#
# It runs as root at first boot of AWS's Deep Learning Base GPU AMI (Docker, the NVIDIA container
# toolkit, the AWS CLI v2, python3). The job's settings are the BYOC_* variables `byoc ec2-train`
# writes in place of the settings line below; tests/test_ec2_user_data.py runs this same file with
# `docker`, `nvidia-smi` and `shutdown` stubbed on PATH, against moto and a local registry.
#
# Steps: on a GPU instance type, check that nvidia-smi sees the GPU (else fail: no training on the
# CPU); log in to ECR and pull the image; sync the data down, and the checkpoints of an earlier
# attempt (a spot interruption resumes from them); write /opt/ml/input/config as SageMaker does;
# `docker run ... train`; sync the checkpoints up; upload metrics.json, the failure file and, last,
# model.tar.gz (its presence means "completed") to BYOC_OUTPUT/; shut down. The log goes to
# CloudWatch (group BYOC_LOG_GROUP, stream JOB/INSTANCE_ID) every few seconds, because an instance
# with no inbound rules has no other way out for it.
set -uo pipefail # not -e: a failed step must still upload its reason and shut the instance down

# @BYOC_SETTINGS@

root="${BYOC_ROOT:-/opt/byoc}" # on the root volume (--volume-gb): data, checkpoints and the model go here
ml="$root/ml"                  # mounted as /opt/ml in the training container
sse=()                         # with a security profile's key (BYOC_KMS_KEY), every upload is encrypted with it
[ -n "${BYOC_KMS_KEY:-}" ] && sse=(--sse aws:kms --sse-kms-key-id "$BYOC_KMS_KEY")
log="$root/train.log"
imds="${BYOC_IMDS_URL:-http://169.254.169.254}"
container=byoc-train

mkdir -p "$ml/input/config" "$ml/input/data/training" "$ml/model" "$ml/output/data" "$ml/checkpoints"
exec >>"$log" 2>&1 # everything below, the training container's output included, is the job's log

imds_get() { # one IMDSv2 metadata path; status 1 when the service or the path is not there
    python3 - "$imds" "$1" <<'EOF'
import sys, urllib.request
base, path = sys.argv[1], sys.argv[2]
try:
    put = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    token = urllib.request.urlopen(put, timeout=2).read().decode()
    get = urllib.request.Request(f"{base}/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": token})
    print(urllib.request.urlopen(get, timeout=2).read().decode())
except OSError:
    sys.exit(1)
EOF
}

instance_id="${BYOC_INSTANCE_ID:-$(imds_get instance-id || hostname)}"
stream="$BYOC_JOB/$instance_id"

ship_logs() { # the log's new whole lines to CloudWatch; the offset moves only once they are accepted
    local batch="$root/log-events.json" offset next
    offset="$(cat "$root/log.offset" 2>/dev/null || echo 0)"
    next="$(python3 - "$log" "$offset" "$batch" <<'EOF'
import json, sys, time
log, start, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(log, "rb") as f:
    f.seek(start)
    lines = f.read(256 * 1024).split(b"\n")[:-1][:5000]  # the last piece is not a whole line yet
now = int(time.time() * 1000)
events = [{"timestamp": now, "message": line.decode("utf-8", "replace") or " "} for line in lines]
if events:
    with open(batch, "w") as out:
        json.dump(events, out)
print(start + sum(len(line) + 1 for line in lines))
EOF
)" || return 0
    [ "$next" -gt "$offset" ] || return 0
    aws logs put-log-events --region "$BYOC_REGION" --log-group-name "$BYOC_LOG_GROUP" \
        --log-stream-name "$stream" --log-events "file://$batch" >/dev/null 2>>"$root/ship-errors.log" \
        && echo "$next" >"$root/log.offset"
}

sync_checkpoints_up() {
    aws s3 sync "$ml/checkpoints/" "$BYOC_OUTPUT/checkpoints/" --region "$BYOC_REGION" --only-show-errors "${sse[@]}"
}

stop_training() { # SIGTERM: byoc.training saves a checkpoint and exits 143
    echo "byoc: $1: stopping the training container (it saves a checkpoint first)"
    docker stop --time 90 "$container" >/dev/null 2>&1
}

watch_job() { # every 5 s: ship the log and heed the spot notice; every minute: checkpoints up; and --max-run
    local started n=0 stopping=0
    started="$(date +%s)"
    # SIGTERM from finish ends the loop between steps, never inside ship_logs: killed there, an
    # upload CloudWatch accepted would not have moved the offset, and finish would ship it again.
    # bash runs the trap once the running command is done; `wait` returns at once for it.
    trap 'stopping=1' TERM
    while [ "$stopping" = 0 ]; do
        sleep 5 &
        wait $!
        [ "$stopping" = 0 ] || break
        n=$((n + 1))
        ship_logs
        [ $((n % 12)) -eq 0 ] && sync_checkpoints_up
        if [ $(($(date +%s) - started)) -gt "$BYOC_MAX_RUN" ] && [ ! -e "$root/max-run" ]; then
            touch "$root/max-run"
            stop_training "--max-run $BYOC_MAX_RUN s reached"
        fi
        if [ "$BYOC_SPOT" = 1 ] && [ ! -e "$root/interrupted" ] && imds_get spot/instance-action >/dev/null; then
            touch "$root/interrupted"
            stop_training "spot interruption notice (byoc ec2-train relaunches and resumes)"
            sync_checkpoints_up
        fi
    done
}

fail() { # the reason SageMaker would put in its failure file; the follower prints it
    echo "byoc: $*"
    [ -s "$ml/output/failure" ] || echo "$*" >"$ml/output/failure"
}

write_config() { # /opt/ml/input/config exactly as SageMaker writes it for one host (rendered by byoc)
    printf '%s\n' "$BYOC_HYPERPARAMETERS" >"$ml/input/config/hyperparameters.json"
    printf '%s\n' "$BYOC_RESOURCE_CONFIG" >"$ml/input/config/resourceconfig.json"
    printf '%s\n' "$BYOC_INPUT_DATA_CONFIG" >"$ml/input/config/inputdataconfig.json"
}

gpu_check() { # on a GPU instance type the GPU must answer: training on its CPU would bill a GPU for nothing
    [ "$BYOC_GPU" = 1 ] || return 0
    local answer
    answer="$(nvidia-smi -L 2>&1)" && return 0
    fail "nvidia-smi failed on GPU instance type $BYOC_INSTANCE_TYPE, so no GPU for training (the AMI's" \
        "driver may not support it): $(printf '%s' "$answer" | tr '\n' ' ' | cut -c1-300)"
    return 1
}

prepare() { # GPU, image, data and earlier checkpoints; status 1 with a failure reason when one is missing
    gpu_check || return 1
    aws ecr get-login-password --region "$BYOC_REGION" \
        | docker login --username AWS --password-stdin "$BYOC_REGISTRY" >/dev/null \
        || { fail "docker login to $BYOC_REGISTRY failed"; return 1; }
    local try
    for try in 1 2 3; do
        docker pull -q "$BYOC_IMAGE" >/dev/null && break
        [ "$try" = 3 ] && { fail "docker pull $BYOC_IMAGE failed"; return 1; }
        sleep 10
    done
    echo "byoc: syncing $BYOC_DATA/ to $ml/input/data/training/"
    aws s3 sync "$BYOC_DATA/" "$ml/input/data/training/" --region "$BYOC_REGION" --only-show-errors \
        || { fail "aws s3 sync $BYOC_DATA/ failed"; return 1; }
    aws s3 sync "$BYOC_OUTPUT/checkpoints/" "$ml/checkpoints/" --region "$BYOC_REGION" --only-show-errors
    echo "byoc: $(find "$ml/checkpoints" -type f | wc -l) checkpoint file(s) from earlier attempts"
    write_config
}

train() { # the training container, as SageMaker runs it; its exit status
    local gpus=() shm
    [ "$BYOC_GPU" = 1 ] && gpus=(--gpus all) # gpu_check has seen the GPU answer
    # The data loader's workers hand batches over in /dev/shm: Docker's 64 MB default makes them die
    # with "bus error". Half the memory is what SageMaker's own hosts leave it.
    shm="$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 2))k"
    docker run --rm --name "$container" --hostname algo-1 "${gpus[@]}" --shm-size "$shm" \
        -v "$ml:/opt/ml" "$BYOC_IMAGE" train
}

upload_results() { # metrics and failure first, model.tar.gz last: the follower reads it as "completed"
    local code="$1"
    sync_checkpoints_up
    if [ -e "$root/max-run" ]; then
        fail "MaxRuntimeExceeded: stopped after --max-run $BYOC_MAX_RUN s (checkpoints kept: rerun to resume)"
    elif [ "$code" != 0 ] && [ "$code" != 143 ]; then
        fail "training container exited with status $code"
    fi
    local file
    for file in output/data/metrics.json output/failure; do
        [ -s "$ml/$file" ] && aws s3 cp "$ml/$file" "$BYOC_OUTPUT/$(basename "$file")" \
            --region "$BYOC_REGION" --only-show-errors "${sse[@]}"
    done
    if [ "$code" = 0 ] && [ ! -s "$ml/output/failure" ]; then
        tar -czf "$root/model.tar.gz" -C "$ml/model" . \
            && aws s3 cp "$root/model.tar.gz" "$BYOC_OUTPUT/model.tar.gz" --region "$BYOC_REGION" --only-show-errors \
                "${sse[@]}" \
            && echo "byoc: model at $BYOC_OUTPUT/model.tar.gz"
    fi
}

finish() { # whatever happened: the last log lines out, then the instance ends itself
    [ -n "${watcher:-}" ] && kill -TERM "$watcher" 2>/dev/null && wait "$watcher" 2>/dev/null
    echo "byoc: shutting down"
    ship_logs
    shutdown -h now
}

main() {
    trap finish EXIT
    echo "byoc: job $BYOC_JOB on $instance_id, image $BYOC_IMAGE, outputs to $BYOC_OUTPUT/"
    aws logs create-log-stream --region "$BYOC_REGION" --log-group-name "$BYOC_LOG_GROUP" \
        --log-stream-name "$stream" 2>/dev/null || true # already there when the first boot is retried
    watch_job &
    watcher=$!
    local code=1
    if prepare; then
        train
        code=$?
        echo "byoc: training container exited with status $code"
    fi
    upload_results "$code"
}

main
