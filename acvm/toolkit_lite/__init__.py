"""acvm's trackers for the course's own evaluation toolkit, ``pytracking-toolkit-lite``.

That toolkit loads a tracker class from a Python file named in its workspace's ``trackers.yaml``
(``tracker_path``, ``class_name``). :mod:`acvm.toolkit_lite.trackers` is that file: one class per
tracker. ``acvm toolkit-lite-config`` prints the entries to paste into ``trackers.yaml``.
"""
