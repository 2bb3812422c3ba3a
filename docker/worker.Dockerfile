# CPU worker image for Dataflow (--sdk_container_image) and Flink/Spark (--environment_type=DOCKER).
# The Beam SDK base image supplies the worker boot binary; the pinned requirements are baked in
# so workers start in seconds instead of installing torch on every VM.
#   docker build -f docker/worker.Dockerfile -t REGION-docker.pkg.dev/PROJECT/REPO/keye-engine:0.1.0 .
FROM apache/beam_python3.11_sdk:2.77.0

# ffmpeg: media decoding; bubblewrap: the think-with-image code sandbox (build_mixture fails closed without it)
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg bubblewrap && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
# GPU workers: uncomment to swap faiss-cpu for faiss-gpu (see requirements-gpu.txt and README).
# COPY requirements-gpu.txt /tmp/requirements-gpu.txt
# RUN pip uninstall -y faiss-cpu && pip install --no-cache-dir -r /tmp/requirements-gpu.txt

COPY . /opt/keye-engine
RUN pip install --no-cache-dir --no-deps /opt/keye-engine
