"""Host-free core: image I/O, PAR, components, crop plans, compositing, inpainters, the fix loop.

Nothing here imports ComfyUI or A1111; the hosts and the CLI are thin adapters over it.
"""
