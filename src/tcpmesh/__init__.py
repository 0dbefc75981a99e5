"""tcpmesh: a service mesh for TCP traffic that speaks the Istio networking API."""

__version__ = "0.1.0"
