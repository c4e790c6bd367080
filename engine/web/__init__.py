"""The engine's web face (docs/monitoring.md): `/metrics`, `/healthz` and `/readyz`, served by
`twisted.web` on the engine's own reactor when the configuration has an `http:` section."""
