"""The local cluster's ingress controller: a small stand-in for ingress-nginx in front of real
nginx (the Debian package).

Like ingress-nginx it reads IngressClasses, Ingresses, Services and EndpointSlices, keeps its
own list of ready endpoints per backend, and brings nginx up to date at most once per
``sync_interval_s``: plan (``plan``), render nginx.conf (``nginxconf``), one apply (write,
``nginx -t``, ``nginx -s reload``) in reload mode, or in dynamic mode a POST of the endpoints to
nginx's Lua balancer (``lua/rolltrace/``), which each worker picks up within a second, and a
reload only when servers, locations or backends change. It runs as the process of an
``registry.k8s.io/ingress-nginx/controller`` container (the kubelet maps that image here), so
it lives in a Pod's network namespace behind a LoadBalancer Service, as ingress-nginx is
deployed. docs/local-cluster.md#ingress-controller.
"""
