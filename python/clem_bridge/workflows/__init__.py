"""Workflows: files in, files out (the CLI contract), and the server's job registry (:mod:`.jobs`).

Above the science modules (array in, array out), below the server, CLI, batch and Fiji front ends.
Nothing outside this package imports it except those front ends.
"""
