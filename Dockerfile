# GPU image: CUDA-enabled JAX (the CUDA libraries come inside the jax[cuda12]
# wheels; the host needs only the NVIDIA driver and container toolkit).
#   docker build -t rnn_jax .
#   docker run --gpus all --rm -v /path/to/data:/data -v "$PWD/runs:/app/runs" rnn_jax \
#       python -m experiments.reuters --flagfile=experiments/flags/reuters.flags \
#       --data_path=/data/reuters.npz --num_seeds=5
# Without --data_path the loader looks in $KERAS_HOME/datasets (here
# /root/.keras/datasets, mount it there) and else downloads the file.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rnn_jax ./rnn_jax
COPY experiments ./experiments
COPY benchmarks ./benchmarks
RUN pip install --upgrade pip && pip install -e ".[cuda]"
COPY tests ./tests
VOLUME ["/data", "/app/runs"]

CMD ["python", "-m", "experiments.sum3", "--flagfile=experiments/flags/sum3.flags"]
