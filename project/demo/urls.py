from django.urls import path

from project.demo import views

urlpatterns = [
    path("", views.index, name="index"),
    path("publish/", views.publish_message, name="publish"),
]
