# GPU worker image for Dataflow (--sdk_container_image) and Flink/Spark (--environment_type=DOCKER):
# CUDA, PyPI's torch (CUDA build), faiss-gpu instead of faiss-cpu, and decord built with NVDEC.
# Untested: no GPU machine has been available to this project yet (README, "GPU workers").
#
#   # the NVIDIA Video Codec SDK headers (nvcuvid.h, cuviddec.h) are licensed downloads; put its
#   # Interface/ folder at docker/video_codec_sdk/Interface before building
#   docker build -f docker/gpu.Dockerfile -t REGION-docker.pkg.dev/PROJECT/REPO/keye-engine-gpu:0.1.0 .
#
# At run time decord needs libnvcuvid from the driver: Dataflow's install-nvidia-driver provides it;
# elsewhere run with NVIDIA_DRIVER_CAPABILITIES=compute,utility,video.
ARG CUDA=12.4.1
ARG BEAM=2.77.0

FROM nvidia/cuda:${CUDA}-devel-ubuntu22.04 AS decord
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
        git cmake build-essential software-properties-common \
        libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev libswresample-dev libswscale-dev \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-dev python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
COPY docker/video_codec_sdk/Interface/ /usr/local/cuda/include/
RUN git clone --recursive --depth 1 https://github.com/dmlc/decord /src/decord \
    && mkdir /src/decord/build && cd /src/decord/build \
    && cmake .. -DUSE_CUDA=ON -DCMAKE_BUILD_TYPE=Release && make -j"$(nproc)" \
    && cd ../python && python3.11 -m venv /opt/wheelenv && /opt/wheelenv/bin/pip install -q wheel setuptools \
    && /opt/wheelenv/bin/python setup.py bdist_wheel -d /wheels

FROM apache/beam_python3.11_sdk:${BEAM} AS beam

FROM nvidia/cuda:${CUDA}-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive NVIDIA_DRIVER_CAPABILITIES=compute,utility,video
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common ffmpeg bubblewrap \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Beam's worker boot binary: the entry point Dataflow and the portable runners start
COPY --from=beam /opt/apache/beam /opt/apache/beam
COPY requirements.txt requirements-gpu.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/requirements.txt \
    && pip uninstall -y faiss-cpu decord && pip install --no-cache-dir -r /tmp/requirements-gpu.txt
COPY --from=decord /src/decord/build/libdecord.so /usr/local/lib/
COPY --from=decord /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl && ldconfig
COPY . /opt/keye-engine
RUN pip install --no-cache-dir --no-deps /opt/keye-engine
ENTRYPOINT ["/opt/apache/beam/boot"]
