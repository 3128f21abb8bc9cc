"""PsychoPy programs: the face experiment and the live feedback display.

They import only :mod:`service.protocol` from the rest of the project; psychopy is imported lazily, so the
schedules and message handling are plain functions tested without a window.
"""
