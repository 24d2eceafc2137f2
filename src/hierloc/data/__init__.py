"""Metadata readers and validation, feature store, dataset builders."""
