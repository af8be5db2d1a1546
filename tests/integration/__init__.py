"""Tests against real servers (Prometheus, Pushgateway, an OTLP receiver) that the tests
start on 127.0.0.1 and stop again."""
