# framegate with its Cython extensions built: the image the compose file runs.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN FRAMEGATE_BUILD_EXT=yes pip install --no-cache-dir . && apt-get purge -y gcc libc6-dev && apt-get autoremove -y
WORKDIR /var/lib/framegate
EXPOSE 8080 9090
ENTRYPOINT ["framegate"]
CMD ["serve", "--host", "0.0.0.0"]
