# syntax=docker/dockerfile:1
#
# keyserver: the Keyless SSL key server. Build from the repository root:
#
#   docker build -f deploy/docker/keyserver.Dockerfile -t keyserver .
#
# See keyedge.Dockerfile for why there is one Dockerfile per binary.
# Checked by deploy/dockerfile_test.go (go test ./deploy/...).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/keyserver ./cmd/keyserver

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keyserver /usr/local/bin/keyserver
USER 65532:65532
# Edges connect on 2407 (mutual TLS); /metrics /healthz /readyz on 9102
# when keyserver.yaml sets metrics_listen: ":9102".
EXPOSE 2407 9102
ENTRYPOINT ["/usr/local/bin/keyserver"]
CMD ["--config", "/etc/keyserver/config/keyserver.yaml"]
