"""Retrieval of knowledge snippets for a goal (paper 3.1: "the most relevant text-based knowledge").

The paper embeds sentences with "a pre-trained LLM" (model not named) and retrieves by similarity; the
top-k is not stated (we use k=3). Two back ends with one interface, ``search(query, k) -> [snippet]``:

- :class:`TfidfRetriever` -- scikit-learn TF-IDF cosine similarity (default, offline);
- :class:`EmbeddingRetriever` -- vectors from an OpenAI-compatible ``/v1/embeddings`` endpoint.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class Retriever(Protocol):
    def search(self, query: str, k: int = 3) -> list[str]: ...


def _query_text(query: str) -> str:
    # item ids keep their underscores (one token each); also add the words so "iron ore" matches too
    return f"{query} {query.replace('_', ' ')}"


class TfidfRetriever:
    """TF-IDF over the snippets (``sklearn.feature_extraction.text.TfidfVectorizer``), cosine top-k."""

    def __init__(self, snippets: Sequence[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not snippets:
            raise ValueError("TfidfRetriever needs at least one snippet")
        self.snippets = list(snippets)
        self.vectorizer = TfidfVectorizer(token_pattern=r"[A-Za-z0-9_]+", sublinear_tf=True)
        self.matrix = self.vectorizer.fit_transform([_query_text(s) for s in self.snippets])

    def search(self, query: str, k: int = 3) -> list[str]:
        """The ``k`` snippets most similar to ``query`` (ties broken by snippet order)."""
        q = self.vectorizer.transform([_query_text(query)])
        scores = (self.matrix @ q.T).toarray().ravel()
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]
        return [self.snippets[i] for i in order]


class EmbeddingRetriever:
    """Cosine similarity of endpoint embeddings (``client.embeddings.create(model=..., input=[...])``).

    Args:
        snippets: the knowledge texts, embedded once at construction.
        client: a synchronous ``openai.OpenAI`` client.
        model: the embedding model id of that endpoint.
    """

    def __init__(self, snippets: Sequence[str], client, model: str, batch: int = 256):
        self.snippets, self.client, self.model = list(snippets), client, model
        vecs = []
        for i in range(0, len(self.snippets), batch):
            resp = client.embeddings.create(model=model, input=self.snippets[i:i + batch])
            vecs.extend(d.embedding for d in resp.data)
        self.matrix = self._normalise(np.asarray(vecs, dtype=np.float64))

    @staticmethod
    def _normalise(m: np.ndarray) -> np.ndarray:
        return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)

    def search(self, query: str, k: int = 3) -> list[str]:
        q = self.client.embeddings.create(model=self.model, input=[_query_text(query)]).data[0].embedding
        scores = self.matrix @ self._normalise(np.asarray(q, dtype=np.float64))
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]
        return [self.snippets[i] for i in order]
