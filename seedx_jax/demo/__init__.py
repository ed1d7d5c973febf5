"""The shapes-world demo (issue 8): scene generator, analyser."""
