"""Reading and writing volumes, point annotations and files, safely."""
