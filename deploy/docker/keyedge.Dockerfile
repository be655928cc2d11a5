# syntax=docker/dockerfile:1
#
# keyedge: the edge node. Build from the repository root:
#
#   docker build -f deploy/docker/keyedge.Dockerfile -t keyedge .
#
# One Dockerfile per binary (keyedge, keyserver, keyctl) rather than one
# with a build argument: the final image has no shell, so ENTRYPOINT must
# name the binary literally (exec form does not expand ARG or ENV).
# Checked by deploy/dockerfile_test.go (go test ./deploy/...).

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so editing the source does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Static binary, no build paths or VCS stamps in it, symbols stripped.
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/keyedge ./cmd/keyedge

# distroless/static: CA certificates (for ACME and origins over https),
# tzdata, /etc/passwd with nonroot (65532); no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keyedge /usr/local/bin/keyedge
USER 65532:65532
# The pod listens unprivileged: TLS 8443, ACME HTTP-01 and the https
# redirect 8080, /metrics /healthz /readyz 9090. The Service maps 443 and
# 80 to the first two, so the container needs no NET_BIND_SERVICE.
EXPOSE 8443 8080 9090
ENTRYPOINT ["/usr/local/bin/keyedge"]
CMD ["serve", "--config", "/etc/keyedge/config/edge.yaml"]
