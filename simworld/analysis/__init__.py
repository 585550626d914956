"""Analysis over one or many run directories.

Tables of the frames and the HTML report.
"""
