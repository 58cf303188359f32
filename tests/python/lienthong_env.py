"""Client settings of the local stack for Python clients, from the variables `.state/env`
exports: SASL_SSL with SCRAM-SHA-512 for Kafka, HTTP basic authentication for the registry, the
development CA for both."""

import os
import pathlib


def kafka_settings(user=None):
    """librdkafka settings for `user` (the environment's principal when None)."""
    user = user or os.environ["LIENTHONG_KAFKA_SASL_USERNAME"]
    password = (pathlib.Path(os.environ["LIENTHONG_KAFKA_USERS_DIR"]) / f"{user}.password").read_text().strip()
    return {
        "bootstrap.servers": os.environ["LIENTHONG_KAFKA_BOOTSTRAP"],
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": os.environ["LIENTHONG_KAFKA_TLS_CA"],
    }


def registry_settings(url, user=None):
    """SchemaRegistryClient settings for the HTTPS registry at `url`, as `user` (the
    environment's registry user when None)."""
    user = user or os.environ["LIENTHONG_REGISTRY_USERNAME"]
    password = (pathlib.Path(os.environ["LIENTHONG_REGISTRY_USERS_DIR"]) / f"{user}.password").read_text().strip()
    return {
        "url": url,
        "ssl.ca.location": os.environ["LIENTHONG_REGISTRY_TLS_CA"],
        "basic.auth.user.info": f"{user}:{password}",
    }
