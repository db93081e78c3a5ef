"""The local cluster's control loops: deployment, replicaset, endpointslice, scheduler, garbage
collector. They talk to the API server only through ``localcluster.apiclient.ApiClient``."""
