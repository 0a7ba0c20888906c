# GPU image: CUDA-enabled JAX (the CUDA libraries come inside the jax[cuda12]
# wheels; the host needs only the NVIDIA driver and container toolkit).
#   docker build -t rnn_jax .
#   docker run --gpus all --rm rnn_jax python -m experiments.shapes --flagfile=experiments/flags/shapes.flags
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rnn_jax ./rnn_jax
COPY experiments ./experiments
RUN pip install --upgrade pip && pip install -e ".[cuda]"
COPY tests ./tests

CMD ["python", "-m", "experiments.shapes", "--flagfile=experiments/flags/shapes.flags"]
