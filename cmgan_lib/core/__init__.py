"""core: what every layer leans on and that knows nothing of CMGAN: audio I/O (soundfile), the STFT and power
compression (`dsp`), the project's paths (`paths`), the CPU allocator setting (`allocator`).

May import: nothing of cmgan_lib but `cmgan_lib.SAMPLE_RATE`.
"""
