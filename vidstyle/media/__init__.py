"""Video I/O with PyAV, one concern per module; `vidstyle.video` re-exports the public names.

container  opening files; the "Decoder threads" rule that keeps PyAV from freezing the WebUI
rotation   display rotation of frames
probe      facts about a video or a frame folder, and the engine's one probe cache
selection  which frames a SourceSpec selects (fps, range, count)
decode     streamed decoding of a selection, and single preview frames
fit        crop / pad / stretch a frame to the job's size
encode     H.264 MP4 output, atomically
audio      the source's audio cut to the selection, as AAC
"""
