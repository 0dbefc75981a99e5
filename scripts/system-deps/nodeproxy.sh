# The node proxy tells pods apart by source address: pods connect through a small
# LD_PRELOAD library (src/tcpmesh/runtime/podsource.c) that the kubelet compiles.
need_apt gcc libc6-dev
