"""The app's modal dialogs, grouped by what they are about."""
